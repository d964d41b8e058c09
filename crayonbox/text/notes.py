"""Plain-language notes on what the normaliser did to a text, so nothing is dropped or rewritten silently.

The steps in `normalize.py` stay pure string functions; this module compares each step's input and output and
says, in words a user can check, what changed where it matters: emoji spelled out, non-Latin scripts
transliterated or kept, URLs and tags deleted, hashtags split, `<person>` rewritten, and a prompt that
collapsed to the lone space every "blank" prompt becomes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

import emoji
from unidecode import unidecode

from crayonbox.text.hashtags import split_hashtag
from crayonbox.text.normalize import TextNormalizer, expand_hashtags

# One or more whitespace-separated words that each hold a non-ASCII character ("साड़ी पहने", "café").
_NON_ASCII_RUN = re.compile(r"\S*[^\x00-\x7f]\S*(?:\s+\S*[^\x00-\x7f]\S*)*")


@dataclass
class NormalizationReport:
    """A text, what each step made of it, and notes on what changed."""

    text: str  # the input
    final: str  # the normalised text
    trace: list[tuple[str, str]] = field(default_factory=list)  # (step name, text after the step)
    notes: list[str] = field(default_factory=list)


def normalize_with_notes(text: str, normalizer: TextNormalizer | None = None) -> NormalizationReport:
    """Normalise `text` and explain what happened (official normaliser unless one is given)."""
    normalizer = normalizer or TextNormalizer()
    trace = normalizer.trace(text)
    notes: list[str] = []
    before = text
    for name, after in trace:
        noter = _STEP_NOTERS.get(name)
        if noter is not None and after != before:
            notes.extend(noter(before, after))
        before = after
    final = trace[-1][1] if trace else text
    notes.extend(_outcome_notes(text, final, normalizer.config.enabled_steps, normalizer.config.mode))
    return NormalizationReport(text=text, final=final, trace=trace, notes=notes)


def script_names(text: str) -> str:
    """The Unicode scripts of the non-ASCII letters in `text`, e.g. "Devanagari" or "CJK/Hiragana"."""
    scripts: list[str] = []
    for ch in text:
        if ch.isascii() or not unicodedata.category(ch).startswith(("L", "M")):
            continue
        first_word = unicodedata.name(ch, "UNKNOWN").split()[0]
        script = first_word if first_word == "CJK" else first_word.title()
        if script not in scripts:
            scripts.append(script)
    return "/".join(scripts) or "symbols"


def _has_non_latin_letters(text: str) -> bool:
    scripts = script_names(text)
    return scripts != "symbols" and any(script != "Latin" for script in scripts.split("/"))


# ---- notes for single steps: (text before, text after) -> notes -------------------------------------------


def _note_demojize(before: str, after: str) -> list[str]:
    found = [match["emoji"] for match in emoji.emoji_list(before)]
    return [f"demojize spelled emoji {e!r} as {emoji.demojize(e)!r}" for e in found]


def _note_unidecode(before: str, after: str) -> list[str]:
    notes = []
    for run in _NON_ASCII_RUN.findall(before):
        ascii_run = unidecode(run)
        if ascii_run.strip():
            notes.append(f"unidecode transliterated {script_names(run)} {run!r} → {ascii_run!r}")
        else:
            notes.append(f"unidecode deleted {script_names(run)} {run!r} (it has no ASCII spelling)")
    return notes


def _note_person(before: str, after: str) -> list[str]:
    return [f"replace_person_token rewrote the CC12M '<person>' placeholder: {before.strip()!r} → "
            f"{after.strip()!r} (the word is drawn from an RNG seeded by the text, so it is repeatable)"]


def _note_urls(before: str, after: str) -> list[str]:
    return [f"remove_urls deleted {url!r}" for url in re.findall(r"http\S+", before)]


def _note_html(before: str, after: str) -> list[str]:
    return [f"remove_html_tags deleted {', '.join(map(repr, re.findall(r'<[^<]+?>', before)))}"]


def _note_hashtags(before: str, after: str) -> list[str]:
    notes = []
    for match in re.finditer(r"#(\w+)", before):
        # Re-run the step on the hashtag and the character after it (the step looks at that character too);
        # hashtags it leaves alone are covered by the "kept ... as written" note.
        if not expand_hashtags(before[match.start() : match.end() + 1]).startswith("#"):
            notes.append(f"expand_hashtags split {match.group(0)!r} → {split_hashtag(match.group(1))!r}")
    return notes


_STEP_NOTERS: dict[str, Callable[[str, str], list[str]]] = {
    "demojize": _note_demojize,
    "unidecode": _note_unidecode,
    "replace_person_token": _note_person,
    "remove_urls": _note_urls,
    "remove_html_tags": _note_html,
    "expand_hashtags": _note_hashtags,
}


# ---- notes on the outcome as a whole -----------------------------------------------------------------------


def _outcome_notes(text: str, final: str, enabled_steps: tuple[str, ...], mode: str) -> list[str]:
    notes = []
    if enabled_steps and not final.strip():
        if final == " ":
            notes.append("text normalised to a lone space: the same input as '', ' ', '.', ',', '?', a bare "
                         "URL or '<b></b>'; it is not the unconditional input (the raw '', never normalised)")
        else:
            notes.append(f"text normalised to {final!r}: nothing of the prompt is left")
    if enabled_steps and "unidecode" not in enabled_steps:
        for run in _NON_ASCII_RUN.findall(final):
            if _has_non_latin_letters(run):
                notes.append(f"kept {script_names(run)} {run!r} as written ({mode} mode: unidecode is off)")
    return notes
