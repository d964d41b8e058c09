"""The text path: normalise a prompt (dalle-mini's `TextNormalizer`, step by step) and encode it with a
byte-level BPE into the ids the encoder reads. A model folder's tokenizer.json + normalizer.json fix it."""

from crayonbox.text.explain import DEFAULT_PROMPTS, ExplainRow, explain, format_rows

# `normalize` (the function) is not re-exported here: it would hide the `crayonbox.text.normalize` module.
from crayonbox.text.normalize import STEP_NAMES, NormalizerConfig, TextNormalizer, normalize_with_trace
from crayonbox.text.notes import NormalizationReport, normalize_with_notes
from crayonbox.text.tokenizer import BART_SPECIAL_TOKENS, TEXT_LENGTH, EncodedPrompt, Tokenizer

__all__ = [
    "BART_SPECIAL_TOKENS",
    "DEFAULT_PROMPTS",
    "STEP_NAMES",
    "TEXT_LENGTH",
    "EncodedPrompt",
    "ExplainRow",
    "NormalizationReport",
    "NormalizerConfig",
    "TextNormalizer",
    "Tokenizer",
    "explain",
    "format_rows",
    "normalize_with_notes",
    "normalize_with_trace",
]
