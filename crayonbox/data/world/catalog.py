"""The emoji catalogue: every fully-qualified emoji with CLDR names in all caption languages, and the ground
truth we derive from its code points (category, gender, skin tone, attire, gender/tone-free concept).

It reads only the shipped table `emoji_names.json.gz` (made by make_names.py from Unicode data), so run time
needs no Unicode or CLDR package.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from crayonbox.errors import CrayonboxError

TABLE_PATH = Path(__file__).with_name("emoji_names.json.gz")
LANGUAGES = ("en", "hi", "es", "zh", "ar")
TONE_MODIFIERS = {chr(0x1F3FB + i): i + 1 for i in range(5)}  # 🏻..🏿 → Fitzpatrick-like tones 1..5
TONE_BY_NUMBER = {tone: mod for mod, tone in TONE_MODIFIERS.items()}
ZWJ, VS16, FEMALE, MALE = "\u200d", "\ufe0f", "\u2640", "\u2642"

# Emoji-test subgroups → the coarse category that world configs and audits speak in.
PERSON_SUBGROUPS = {"person", "person-gesture", "person-role", "person-fantasy", "person-activity",
                    "person-sport", "person-resting"}
GROUP_CATEGORY = {"Smileys & Emotion": "face", "Animals & Nature": "animal", "Food & Drink": "food",
                  "Travel & Places": "place", "Activities": "activity", "Objects": "object",
                  "Symbols": "symbol", "Flags": "flag", "Component": "component"}

# Gendered base characters and their gender-neutral counterparts, so that 👩‍⚕️, 👨‍⚕️ and 🧑‍⚕️ share a concept.
NEUTRAL_BASE = {"\U0001F469": "\U0001F9D1", "\U0001F468": "\U0001F9D1",   # woman, man → person
                "\U0001F467": "\U0001F9D2", "\U0001F466": "\U0001F9D2",   # girl, boy → child
                "\U0001F475": "\U0001F9D3", "\U0001F474": "\U0001F9D3",   # old woman, old man → older person
                "\U0001F478": "\U0001FAC5", "\U0001F934": "\U0001FAC5",   # princess, prince → with crown
                "\U0001F930": "\U0001FAC4", "\U0001FAC3": "\U0001FAC4"}   # pregnant woman/man → person
WOMAN_WORDS = {"woman", "women", "girl", "princess", "mrs.", "mermaid", "old woman"}
MAN_WORDS = {"man", "men", "boy", "prince", "mr.", "merman", "old man"}
# Attire that a person emoji wears by design, found in its English name → the attire vocabulary of configs.
WORN_ATTIRE = {"headscarf": "hijab", "turban": "turban", "tuxedo": "suit", "suit": "suit", "veil": "veil",
               "skullcap": "skullcap", "crown": "crown"}


@dataclass(frozen=True)
class Emoji:
    """One fully-qualified emoji sequence and its ground truth."""

    seq: str
    name: dict[str, str]  # CLDR `tts` name per language ("woman: medium skin tone")
    keywords: dict[str, tuple[str, ...]]  # CLDR keywords per language (synonyms, tag-style captions)
    group: str
    subgroup: str
    # person, attire, animal, food, object, plant, face, place, activity, symbol, flag, people, body
    category: str
    gender: str  # woman, man, neutral (people) or none (everything else)
    skin_tone: int | None  # 1..5 from a single modifier U+1F3FB..1F3FF; None = yellow default or not a person
    attire: str | None  # clothing item ("sari") or attire worn by design ("hijab" for 🧕)
    untoned: str  # the sequence with skin-tone modifiers removed
    concept: str  # gender- and tone-free sequence (🧑‍⚕️ for every health worker)

    @property
    def codepoints(self) -> str:
        """Space-separated hex code points, as in emoji-test.txt."""
        return " ".join(f"{ord(ch):04X}" for ch in self.seq)


def _category(group: str, subgroup: str) -> str:
    if subgroup in PERSON_SUBGROUPS:
        return "person"
    if subgroup in ("family", "person-symbol"):
        return "people"
    if group == "People & Body":
        return "body"  # hands and body parts
    if subgroup == "clothing":
        return "attire"
    if subgroup.startswith("plant-"):
        return "plant"
    return GROUP_CATEGORY.get(group, "other")


def _gender(category: str, seq: str, english: str) -> str:
    if category != "person":
        return "none"
    if FEMALE in seq:
        return "woman"
    if MALE in seq:
        return "man"
    words = set(english.split(":")[0].replace(",", " ").split())
    head = english.split(":")[0]
    if words & WOMAN_WORDS or head.startswith("old woman"):
        return "woman"
    if words & MAN_WORDS:
        return "man"
    return "neutral"


def _skin_tone(seq: str) -> int | None:
    tones = {TONE_MODIFIERS[ch] for ch in seq if ch in TONE_MODIFIERS}
    return tones.pop() if len(tones) == 1 else None


def _attire(category: str, english_base: str) -> str | None:
    if category == "attire":
        return english_base
    if category == "person":
        for word, attire in WORN_ATTIRE.items():
            if word in english_base.split():
                return attire
    return None


def _concept(untoned: str, known: set[str]) -> str:
    """Drop a trailing ♀/♂ sign and map a gendered base character to its neutral one, when that exists."""
    for sign in (FEMALE, MALE):
        for suffix in (ZWJ + sign + VS16, ZWJ + sign):
            if untoned.endswith(suffix):
                candidate = untoned[: -len(suffix)]
                if candidate in known or candidate + VS16 in known:
                    return candidate if candidate in known else candidate + VS16
    if untoned and untoned[0] in NEUTRAL_BASE:
        candidate = NEUTRAL_BASE[untoned[0]] + untoned[1:]
        if candidate in known:
            return candidate
    return untoned


class Catalog:
    """All emoji named in every caption language; look-ups by sequence, English name and concept."""

    def __init__(self, entries: list[dict]):
        named = [e for e in entries if all(lang in e.get("name", {}) for lang in LANGUAGES)]
        known = {e["seq"] for e in named}
        self.emoji: list[Emoji] = []
        for e in named:
            untoned = "".join(ch for ch in e["seq"] if ch not in TONE_MODIFIERS)
            category = _category(e["group"], e["subgroup"])
            english = e["name"]["en"]
            self.emoji.append(Emoji(
                seq=e["seq"], name=dict(e["name"]),
                keywords={lang: tuple(k) for lang, k in e["keywords"].items()},
                group=e["group"], subgroup=e["subgroup"], category=category,
                gender=_gender(category, e["seq"], english), skin_tone=_skin_tone(e["seq"]),
                attire=_attire(category, english.split(":")[0]), untoned=untoned,
                concept=_concept(untoned, known) if category == "person" else untoned,
            ))
        self.by_seq = {e.seq: e for e in self.emoji}
        self.by_name = {e.name["en"]: e for e in self.emoji}
        # A keyword that names another emoji ("dress" for 🥻) or mostly tags another category ("zodiac" for
        # 👧, mostly on ♈…♓) would mislead as a synonym; these tables let describe.py skip such keywords.
        self.names = {lang: {e.name[lang] for e in self.emoji} for lang in LANGUAGES}
        tagged: dict[str, dict[str, Counter[str]]] = {lang: {} for lang in LANGUAGES}
        for e in self.emoji:
            if e.seq == e.untoned:  # count each emoji once, not once per skin tone
                for lang, words in e.keywords.items():
                    for word in words:
                        tagged[lang].setdefault(word, Counter())[e.category] += 1
        self.keyword_category = {lang: {word: counts.most_common(1)[0][0] for word, counts in table.items()}
                                 for lang, table in tagged.items()}
        self.variants: dict[str, list[Emoji]] = {}
        for e in self.emoji:
            self.variants.setdefault(e.concept, []).append(e)

    def find(self, name: str, where: str = "emoji") -> Emoji:
        """The emoji whose English CLDR name is `name`; a CrayonboxError with close matches otherwise."""
        if name in self.by_name:
            return self.by_name[name]
        if name in self.by_seq:
            return self.by_seq[name]
        close = difflib.get_close_matches(name, list(self.by_name), n=4, cutoff=0.6)
        hint = f"; did you mean {close}?" if close else "; use English CLDR names such as 'woman', 'sari'"
        raise CrayonboxError(f"{where}: unknown emoji {name!r}{hint}")

    def subgroup(self, subgroup: str) -> list[Emoji]:
        """Tone-free members of an emoji-test subgroup, in CLDR order."""
        return [e for e in self.emoji if e.subgroup == subgroup and e.seq == e.untoned]

    def person_variants(self, base: Emoji) -> list[Emoji]:
        """All renderable variants of a person entry: gender variants of a neutral concept (🧑 → 👩, 👨 …),
        or only the tone variants of an entry that names a gender itself ("woman health worker")."""
        if base.gender == "neutral":
            pool = self.variants[base.concept]
        else:
            pool = [e for e in self.variants[base.concept] if e.untoned == base.untoned]
        # multi-person sequences with two different tones have skin_tone None *and* modifiers: skip them
        return [e for e in pool if e.skin_tone is not None or e.seq == e.untoned]


@functools.lru_cache(maxsize=1)
def load_catalog(path: Path = TABLE_PATH) -> Catalog:
    """Load the shipped name table (cached per process)."""
    try:
        table = json.loads(gzip.decompress(Path(path).read_bytes()))
    except FileNotFoundError:
        raise CrayonboxError(f"emoji name table missing: {path}; regenerate it with `python -m "
                             "crayonbox.data.world.make_names` (needs apt unicode-cldr-core)") from None
    return Catalog(table["emoji"])
