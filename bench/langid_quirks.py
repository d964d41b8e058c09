"""Measure how often each language detector mislabels short captions of the emoji world.

    .venv/bin/python bench/langid_quirks.py [--markdown]

Part 1: English CLDR names of the world's people, clothing, animals and food (no skin-tone variants), alone
and in short English templates; a caption not labelled "en" is what an English-only filter would empty.
Part 2: the same names in Hindi, raw and after the official normaliser (unidecode romanises Devanagari); a
caption labelled "en" would pass an English-only filter that runs after normalisation.
Results are written up in docs/langid-quirks.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

from crayonbox.data.langid import (
    DEFAULT_LANGUAGES,
    FastLangdetectLite,
    Py3LangidDetector,
    detect_examples,
    fill_templates,
    measure_misdetection,
)
from crayonbox.text.normalize import normalize

NAMES_TABLE = Path(__file__).parents[1] / "crayonbox" / "data" / "world" / "emoji_names.json.gz"
WORLD_LANGUAGES = ("en", "hi", "es", "zh", "ar")
# Subgroups of emoji-test.txt that the world draws objects from.
SUBGROUPS = ("person", "person-role", "person-activity", "clothing", "animal-mammal", "animal-bird",
             "food-fruit", "food-vegetable", "food-prepared", "food-asian", "food-sweet", "drink")


HAND_EXAMPLES = ("kimono", "sari", "a kimono", "a sari", "a photo of a kimono", "a woman wearing a kimono",
                 "a woman wearing a sari", "t-shirt", "necktie", "woman with headscarf", "dog",
                 "Priya wearing a sari")


def world_names(language: str, subgroups: tuple[str, ...] = SUBGROUPS) -> list[str]:
    """CLDR names in `language` of the world's objects, without skin-tone variants (their names hold ':')."""
    table = json.loads(gzip.open(NAMES_TABLE).read())
    names = {e.get("name", {}).get(language, "") for e in table["emoji"] if e["subgroup"] in subgroups}
    return sorted(n for n in names if n and ":" not in n)


def print_table(title: str, rows: list) -> None:
    print(f"\n### {title}\n")
    print("| detector | caption style | n | mislabelled | share | most common wrong labels | examples |")
    print("|---|---|---:|---:|---:|---|---|")
    for r in rows:
        wrong = ", ".join(f"{lang} {count}" for lang, count in r.wrong_languages)
        examples = "; ".join(f"`{c}` → {lang}" for c, lang in r.examples[:3])
        print(f"| {r.detector} | {r.style} | {r.n} | {r.wrong} | {100 * r.rate:.1f} % | {wrong} "
              f"| {examples} |")


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    detectors = [Py3LangidDetector(WORLD_LANGUAGES), Py3LangidDetector(DEFAULT_LANGUAGES),
                 Py3LangidDetector(None), FastLangdetectLite()]
    start = time.perf_counter()
    print("\n### Hand examples (label, confidence)\n")
    print("| caption | " + " | ".join(d.name for d in detectors) + " |")
    print("|---|" + "---|" * len(detectors))
    for caption, labels in detect_examples(HAND_EXAMPLES, detectors).items():
        print(f"| `{caption}` | " + " | ".join(f"{lang} {conf:.2f}" for lang, conf in labels.values()) + " |")
    english = fill_templates(world_names("en"))
    print_table("English captions not labelled en (people, clothing, animals, food)",
                measure_misdetection(english, detectors, "en"))
    clothing = fill_templates(world_names("en", ("clothing",)))
    print_table("English clothing captions not labelled en", measure_misdetection(clothing, detectors, "en"))
    hindi_names = world_names("hi")
    hindi = {"Hindi name, raw": hindi_names,
             "Hindi name, normalised (unidecode)": [normalize(n).strip() for n in hindi_names]}
    print_table("Hindi captions not labelled hi", measure_misdetection(hindi, detectors, "hi"))
    print(f"\n({len(english['bare name'])} English and {len(hindi_names)} Hindi names; "
          f"{time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
