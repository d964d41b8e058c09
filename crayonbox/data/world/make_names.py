"""Generate the shipped emoji name table `emoji_names.json.gz` (run once; the output is committed).

Inputs (Debian packages, only needed to *regenerate* the table, never at run time):
  - `unicode-data`      /usr/share/unicode/emoji/emoji-test.txt  (groups, subgroups, fully-qualified emoji)
  - `unicode-cldr-core` /usr/share/unicode/cldr/common/annotations{,Derived}/<lang>.xml  (names, keywords)

    python -m crayonbox.data.world.make_names [--emoji-test PATH] [--cldr DIR] [--out PATH]

The table holds every fully-qualified emoji with its group, subgroup and Emoji version from emoji-test.txt,
and its CLDR `tts` name and keywords in each of LANGUAGES (an entry lacks a language where CLDR 41 has no
name for it, e.g. the Emoji 15.0 additions). Both sources are Unicode data, redistributed under the
Unicode licence (see NAMES_LICENSE.txt next to the table).
"""

from __future__ import annotations

import argparse
import gzip
import json
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

LANGUAGES = ("en", "hi", "es", "zh", "ar")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
CLDR_DIR = Path("/usr/share/unicode/cldr/common")
OUT = Path(__file__).with_name("emoji_names.json.gz")
INHERIT = "↑↑↑"  # CLDR's "same as the parent locale" marker: not a name
KEEP_FORMAT_CHARS = {"\u200d", "\ufe0f"}  # ZWJ and VS16 are part of emoji; other Cf chars are bidi noise


def parse_emoji_test(path: Path) -> list[dict]:
    """Fully-qualified sequences in CLDR order, with their group, subgroup and Emoji version."""
    entries, group, subgroup = [], "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and "; fully-qualified" in line:
            codes, comment = line.split("#", 1)
            seq = "".join(chr(int(cp, 16)) for cp in codes.split(";")[0].split())
            # comment looks like " 🥻 E12.0 sari"; the English name comes from CLDR, like the others
            version = comment.split()[1]
            entries.append({"seq": seq, "group": group, "subgroup": subgroup, "version": version})
    return entries


def clean_text(text: str) -> str:
    """Strip bidi/format characters (219 Arabic names carry U+202B etc.) and collapse whitespace."""
    kept = "".join(ch for ch in text if unicodedata.category(ch) != "Cf" or ch in KEEP_FORMAT_CHARS)
    return " ".join(kept.split())


def parse_annotations(path: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """`tts` names and keyword lists of one CLDR annotations file, keyed by sequence without FE0F."""
    names: dict[str, str] = {}
    keywords: dict[str, list[str]] = {}
    for node in ET.parse(path).getroot().iter("annotation"):
        cp, text = node.get("cp", ""), (node.text or "").strip()
        if not text or text == INHERIT:
            continue
        if node.get("type") == "tts":
            names[cp] = clean_text(text)
        else:
            keywords[cp] = [clean_text(k) for k in text.split("|") if clean_text(k) and k.strip() != INHERIT]
    return names, keywords


def load_cldr(cldr_dir: Path, lang: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Merge the base and derived (skin tone, ZWJ) annotations of one language."""
    names, keywords = parse_annotations(cldr_dir / "annotations" / f"{lang}.xml")
    derived = cldr_dir / "annotationsDerived" / f"{lang}.xml"
    if derived.exists():
        more_names, more_keywords = parse_annotations(derived)
        names.update(more_names)
        keywords.update(more_keywords)
    return names, keywords


def build_table(emoji_test: Path, cldr_dir: Path) -> dict:
    """The table as a JSON-ready dict: {"languages", "sources", "emoji": [...]}."""
    entries = parse_emoji_test(emoji_test)
    for lang in LANGUAGES:
        names, keywords = load_cldr(cldr_dir, lang)
        for entry in entries:
            key = entry["seq"].replace("\ufe0f", "")
            if key in names:
                entry.setdefault("name", {})[lang] = names[key]
                entry.setdefault("keywords", {})[lang] = keywords.get(key, [])
    header = emoji_test.read_text(encoding="utf-8").splitlines()[:9]
    return {
        "languages": list(LANGUAGES),
        "sources": {
            "emoji_test": [h.lstrip("# ") for h in header if h.startswith(("# Date", "# Version"))],
            "cldr": "Debian unicode-cldr-core (CLDR 41), annotations + annotationsDerived",
        },
        "emoji": entries,
    }


def main() -> None:
    """Write the gzipped table (deterministic bytes: fixed gzip mtime, sorted keys)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emoji-test", type=Path, default=EMOJI_TEST)
    parser.add_argument("--cldr", type=Path, default=CLDR_DIR)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    table = build_table(args.emoji_test, args.cldr)
    raw = json.dumps(table, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
    args.out.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    complete = sum(len(e.get("name", {})) == len(LANGUAGES) for e in table["emoji"])
    print(f"{args.out}: {len(table['emoji'])} emoji, {complete} named in all of {LANGUAGES}, "
          f"{len(raw):,} B raw, {args.out.stat().st_size:,} B gzipped")


if __name__ == "__main__":
    main()
