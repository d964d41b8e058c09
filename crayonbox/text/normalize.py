"""The dalle-mini text normaliser, one small named function per official step, in the official order.

dalle-mini (DM `src/dalle_mini/model/text.py`, `TextNormalizer.__call__`) rewrites every prompt before the BPE
sees it. This module is that normaliser taken apart, so that each step can be read, traced and switched off.

Why it matters (the blank-prompt mystery): the normaliser
deletes punctuation, URLs and HTML, then *always* prepends a space. So `''`, `' '`, `'.'`, `','`, `':'`,
`'?'`, a bare URL and `'<b></b>'` all become the same text `" "`, which the BPE reads as `<s> Ġ </s>`. The
unconditional branch of guidance is the raw `""` (`<s></s>`), which never passes through this code. A "blank"
prompt is therefore *not* unconditional: guidance amplifies the difference between `Ġ` and nothing.

Modes (`NormalizerConfig.mode`):
- "official": every step, as dalle-mini runs them (the text the released models were trained on);
- "raw": no step at all, the text passes unchanged;
- "multilingual": official minus `unidecode`, so Devanagari, Arabic, CJK... survive for our own BPE.
Single steps can also be disabled by name (`NormalizerConfig.disabled_steps`).

Two deliberate changes from the original, both documented where they happen:
- `replace_person_token` draws its word from an RNG seeded by the text itself, so one prompt always gives
  one normalised text (the original used the global `random`);
- `expand_hashtags` ranks words with wordfreq's English list instead of a file downloaded at run time, and
  leaves hashtags holding non-ASCII letters alone (only reachable when `unidecode` is off).
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import emoji
import ftfy
from unidecode import unidecode

from crayonbox.config import write_text_atomic
from crayonbox.errors import CrayonboxError
from crayonbox.text.hashtags import split_hashtag

Mode = Literal["official", "raw", "multilingual"]
MODES: tuple[str, ...] = ("official", "raw", "multilingual")
CONFIG_FILENAME = "normalizer.json"

# dalle-mini's weights for the CC12M `<person>` placeholder ("based on wiki word occurrence").
PERSON_WORDS = (("a person", 282265), ("someone", 121194), ("somebody", 12219))
# Placeholder that shields dots, apostrophes and date slashes from the punctuation pass.
PROTECT_TOKEN = "xtokx"


# ---- the steps, in the official order -------------------------------------------------------------------


def fix_text(t: str) -> str:
    """Repair mojibake and odd unicode with `ftfy.fix_text` (also straightens curly quotes, applies NFC)."""
    return ftfy.fix_text(t)


def fix_html(t: str) -> str:
    """Unescape HTML entities twice (`&amp;amp;` → `&`), as OpenAI CLIP does."""
    return html.unescape(html.unescape(t))


def demojize(t: str) -> str:
    """Spell emoji as `:name:` (❤️ → `:red_heart:`) before unidecode would delete them."""
    return emoji.demojize(t)


def transliterate(t: str) -> str:
    """Transliterate all non-ASCII to ASCII with `unidecode` (é → e, महिला → mhilaa, 中文 → Zhong Wen).

    Non-English text is romanised rather than dropped; the captions were English, so the result carries little
    meaning for the released models. This is the step the "multilingual" mode switches off.
    """
    return unidecode(t)


def lower(t: str) -> str:
    """Lower-case everything."""
    return t.lower()


def replace_person_token(t: str, rng: random.Random | None = None) -> str:
    """Replace CC12M's `<person>` by "a person", "someone" or "somebody"; a run of them by "people".

    The original draws the word from the global `random` with weights 282265:121194:12219, so a prompt holding
    `<person>` normalised differently on every call. Here the draw comes from `rng`, or, when none is given,
    from an RNG seeded with the SHA-256 of the text entering this step: the same prompt always gives the same
    words, while the words across many captions keep the original proportions.
    """
    t = re.sub(r"<person>([,\s]*(and)*[,\s]*<person>)+", " people ", t)
    if "<person>" not in t:
        return t
    if rng is None:
        rng = random.Random(int.from_bytes(hashlib.sha256(t.encode("utf8")).digest()[:8], "big"))
    words, weights = zip(*PERSON_WORDS, strict=True)
    while "<person>" in t:
        t = t.replace("<person>", f" {rng.choices(words, weights)[0]} ", 1)
    return t


def remove_wiki_ref(t: str) -> str:
    """Strip a Wikipedia reference like `[12]` at the very start or end (for WIT captions)."""
    t = re.sub(r"\A\s*\[\d+\]", "", t)
    return re.sub(r"\[\d+\]\s*\Z", "", t)


def remove_html_tags(t: str) -> str:
    """Replace each HTML tag `<...>` by a space."""
    return re.sub(r"<[^<]+?>", " ", t)


def remove_urls(t: str) -> str:
    """Delete everything from `http` up to the next whitespace."""
    return re.sub(r"http\S+", "", t)


def remove_comma_numbers(t: str) -> str:
    """Drop thousands separators: `1,000,000` → `1000000` (applied twice, so that every group goes)."""
    for _ in range(2):
        t = re.sub(r"(\d),(\d{3})", r"\1\2", t)
    return t


def protect(t: str) -> str:
    """Hide dots between word characters (3.5, e.g), the apostrophes of 's 't 'd 'm 'll 're 've, and
    digit/digit slashes (dates) behind placeholders, so that the punctuation pass below leaves them alone."""
    t = re.sub(r"(\w)\.(\w)", rf"\1{PROTECT_TOKEN}dot{PROTECT_TOKEN}\2", t)
    t = re.sub(r"'(?=([stdm]|(ll)|(re)|(ve)|(ll))\b)", rf"{PROTECT_TOKEN}quote{PROTECT_TOKEN}", t)
    return re.sub(r"(\d)/(\d)", rf"\1{PROTECT_TOKEN}slash{PROTECT_TOKEN}\2", t)


def handle_special_chars(t: str) -> str:
    """Turn `word-word` into `word word`, and put spaces around `% & / $ *`, which are kept as words."""
    t = re.sub(r"(\w)-(\w)", r"\1 \2", t)
    return re.sub(r"([%&/$*])", r" \1 ", t)


def expand_hashtags(t: str) -> str:
    """Replace `#sunsetbeach` by its words `sunset beach` (see `crayonbox.text.hashtags`).

    A hashtag holding non-ASCII letters is left as it is (its `#` goes in `ignore_chars`): the English word
    list would otherwise delete it. With `unidecode` on, the text is ASCII here and this never happens.
    """

    def expand(match: re.Match[str]) -> str:
        # `\w` stops before Devanagari vowel signs, so look at the next character as well.
        next_char = t[match.end() : match.end() + 1]
        cut_inside_a_word = next_char != "" and not next_char.isascii() and not next_char.isspace()
        if not match.group(1).isascii() or cut_inside_a_word:
            return match.group(0)
        return split_hashtag(match.group(1))

    return re.sub(r"#(\w+)", expand, t)


def ignore_chars(t: str) -> str:
    """Replace underscores, `#` and backslashes by spaces."""
    return re.sub(r"[_#\\]", " ", t)


def simplify_quotes(t: str) -> str:
    """Turn every single quote, double quote and backtick into ` " `."""
    return re.sub(r"""['"`]""", ' " ', t)


def replace_punctuation_with_commas(t: str) -> str:
    """Turn every one of `()[].,|:;?!=+~-/{}` into a comma. This is why '.', ':', '?' ... vanish later."""
    return re.sub(r"[()\[\].,|:;?!=+~\-/{}]", ",", t)


def unprotect(t: str) -> str:
    """Put back the dots, apostrophes and date slashes hidden by `protect`."""
    t = t.replace(f"{PROTECT_TOKEN}dot{PROTECT_TOKEN}", ".")
    t = t.replace(f"{PROTECT_TOKEN}quote{PROTECT_TOKEN}", "'")
    return t.replace(f"{PROTECT_TOKEN}slash{PROTECT_TOKEN}", "/")


def remove_repeating_chars(t: str) -> str:
    """Collapse 4+ repeats of a non-digit character into one ("sooooo" → "so"; 3 are kept for 'VIII')."""
    return re.sub(r"(\D)(\1{3,})", r"\1", t)


def merge_quotes(t: str) -> str:
    """Merge runs of quotes (with their spaces) into one ` " `."""
    return re.sub(r'(\s*"+\s*)+', ' " ', t)


def merge_commas(t: str) -> str:
    """Merge runs of commas (with their spaces) into one `, `."""
    return re.sub(r"(\s*,+\s*)+", ", ", t)


def remove_extra_spaces(t: str) -> str:
    """Collapse any whitespace run (tabs and newlines too) into one space."""
    return re.sub(r"\s+", " ", t)


def strip_commas(t: str) -> str:
    """Strip spaces, then one trailing, one leading comma: a lone ',' (what '.' or '?' became) ends here."""
    t = t.strip()
    t = t[:-1] if t.endswith(",") else t
    t = t[1:] if t.startswith(",") else t
    return t.strip()


def add_leading_space(t: str) -> str:
    """Prepend one space, always: the BPE then reads the first word as `Ġword`, like every other word.

    This is the step that turns an emptied prompt into `" "` rather than `""`.
    """
    return f" {t}"


# The official order (DM `TextNormalizer.__call__`). Names are what configs, traces and notes refer to.
OFFICIAL_STEPS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("fix_text", fix_text),
    ("fix_html", fix_html),
    ("demojize", demojize),
    ("unidecode", transliterate),
    ("lower", lower),
    ("replace_person_token", replace_person_token),
    ("remove_wiki_ref", remove_wiki_ref),
    ("remove_html_tags", remove_html_tags),
    ("remove_urls", remove_urls),
    ("remove_comma_numbers", remove_comma_numbers),
    ("protect", protect),
    ("handle_special_chars", handle_special_chars),
    ("expand_hashtags", expand_hashtags),
    ("ignore_chars", ignore_chars),
    ("simplify_quotes", simplify_quotes),
    ("replace_punctuation_with_commas", replace_punctuation_with_commas),
    ("unprotect", unprotect),
    ("remove_repeating_chars", remove_repeating_chars),
    ("merge_quotes", merge_quotes),
    ("merge_commas", merge_commas),
    ("remove_extra_spaces", remove_extra_spaces),
    ("strip_commas", strip_commas),
    ("add_leading_space", add_leading_space),
)
STEP_NAMES: tuple[str, ...] = tuple(name for name, _ in OFFICIAL_STEPS)
_MODE_DISABLES = {
    "official": frozenset(),
    "multilingual": frozenset({"unidecode"}),
    "raw": frozenset(STEP_NAMES),
}


# ---- configuration and the normaliser ---------------------------------------------------------------------


@dataclass(frozen=True)
class NormalizerConfig:
    """Which normalisation steps run. Saved as `normalizer.json` next to the tokenizer files."""

    mode: Mode = "official"  # "official" (all steps), "raw" (none), "multilingual" (all but unidecode)
    disabled_steps: tuple[str, ...] = ()  # step names (see STEP_NAMES) switched off on top of the mode

    def __post_init__(self) -> None:
        object.__setattr__(self, "disabled_steps", tuple(self.disabled_steps))
        if self.mode not in MODES:
            raise CrayonboxError(f"unknown normaliser mode {self.mode!r}: use one of {', '.join(MODES)}")
        unknown = sorted(set(self.disabled_steps) - set(STEP_NAMES))
        if unknown:
            raise CrayonboxError(f"unknown normaliser step(s) {unknown}: the steps are "
                                 f"{', '.join(STEP_NAMES)}")
        if ("protect" in self.disabled_steps) != ("unprotect" in self.disabled_steps):
            raise CrayonboxError("disable 'protect' and 'unprotect' together, or placeholders leak into "
                                 "the text")

    @property
    def enabled_steps(self) -> tuple[str, ...]:
        """The names of the steps that run, in order."""
        off = _MODE_DISABLES[self.mode] | set(self.disabled_steps)
        return tuple(name for name in STEP_NAMES if name not in off)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {"mode": self.mode, "disabled_steps": list(self.disabled_steps)}

    @classmethod
    def from_dict(cls, data: dict) -> NormalizerConfig:
        """Build from `to_dict` output; an unknown key is an error, so a typo cannot change the text."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise CrayonboxError(f"unknown key(s) {sorted(unknown)} in {CONFIG_FILENAME}")
        return cls(mode=data.get("mode", "official"), disabled_steps=tuple(data.get("disabled_steps", ())))

    def save(self, folder: str | Path) -> Path:
        """Write `normalizer.json` into `folder` atomically; return its path."""
        path = Path(folder) / CONFIG_FILENAME
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> NormalizerConfig:
        """Read `normalizer.json` from `folder`; a folder without one gets the official normaliser."""
        path = Path(folder) / CONFIG_FILENAME
        if not path.exists():
            return cls()
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf8")))
        except json.JSONDecodeError as e:
            raise CrayonboxError(f"{path} is not valid JSON ({e}); fix or delete it") from e


class TextNormalizer:
    """Runs the enabled steps of a `NormalizerConfig` over a text."""

    def __init__(self, config: NormalizerConfig | None = None, rng: random.Random | None = None):
        """`rng`, if given, drives `replace_person_token` instead of the text-seeded RNG."""
        self.config = config or NormalizerConfig()
        functions = dict(OFFICIAL_STEPS)
        if rng is not None:
            functions["replace_person_token"] = partial(replace_person_token, rng=rng)
        self.steps = [(name, functions[name]) for name in self.config.enabled_steps]

    def __call__(self, text: str) -> str:
        """The normalised text."""
        for _, step in self.steps:
            text = step(text)
        return text

    def trace(self, text: str) -> list[tuple[str, str]]:
        """The text after each enabled step, as (step name, output) pairs in order."""
        outputs = []
        for name, step in self.steps:
            text = step(text)
            outputs.append((name, text))
        return outputs


def normalize(text: str, config: NormalizerConfig | None = None) -> str:
    """Normalise one text (official mode unless `config` says otherwise)."""
    return TextNormalizer(config)(text)


def normalize_with_trace(
    text: str, config: NormalizerConfig | None = None
) -> tuple[str, list[tuple[str, str]]]:
    """Normalise one text and return (final text, [(step name, text after that step), ...])."""
    trace = TextNormalizer(config).trace(text)
    return (trace[-1][1] if trace else text), trace
