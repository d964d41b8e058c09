"""What the model is really given for a few telling prompts: the blank ones, and a non-English one.

`explain(prompts, tokenizer)` lists, for each prompt, the normalised text, the ids, whether they equal the
unconditional branch, and the normaliser's notes. The CLI prints it with `format_rows`. With the official
normaliser, '', ' ', '.' and ',' all give `<s> Ġ </s>`, one token away from the unconditional `<s> </s>`;
the Hindi prompt comes out romanised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from crayonbox.text.tokenizer import EncodedPrompt, Tokenizer

# The "blank" prompts of the viral reports, and Hindi for "a woman wearing a sari".
DEFAULT_PROMPTS: tuple[str, ...] = ("", " ", ".", ",", "साड़ी पहने एक महिला")


@dataclass
class ExplainRow:
    """One input as the model sees it."""

    label: str  # the prompt as a Python literal, or "unconditional branch"
    normalized: str  # the text the BPE saw
    ids: list[int]  # without padding
    tokens: list[str]  # BPE strings of the ids
    same_as_unconditional: bool  # the ids equal the unconditional branch's
    notes: list[str] = field(default_factory=list)


def explain(prompts: Iterable[str] | None, tokenizer: Tokenizer) -> list[ExplainRow]:
    """Rows for the unconditional branch, then each prompt (DEFAULT_PROMPTS when `prompts` is None)."""
    unconditional = tokenizer.unconditional()
    rows = [_row("unconditional branch", unconditional, unconditional)]
    for prompt in DEFAULT_PROMPTS if prompts is None else prompts:
        rows.append(_row(repr(prompt), tokenizer.encode(prompt), unconditional))
    return rows


def format_rows(rows: list[ExplainRow]) -> str:
    """A plain-text table of `explain` rows, notes indented under their row."""
    width = max(len(row.label) for row in rows)
    lines = []
    for row in rows:
        verdict = "= unconditional" if row.same_as_unconditional else "≠ unconditional"
        lines.append(f"{row.label:<{width}}  → {row.normalized!r}  ids {row.ids}  {' '.join(row.tokens)}  "
                     f"({verdict})")
        lines.extend(f"{'':<{width}}    note: {note}" for note in row.notes)
    return "\n".join(lines)


def _row(label: str, encoded: EncodedPrompt, unconditional: EncodedPrompt) -> ExplainRow:
    length = sum(encoded.attention_mask)
    return ExplainRow(
        label=label,
        normalized=encoded.normalized,
        ids=encoded.ids[:length],
        tokens=encoded.tokens,
        same_as_unconditional=encoded.ids == unconditional.ids,
        notes=encoded.notes,
    )
