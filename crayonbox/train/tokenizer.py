"""Train a dalle-mini-style byte-level BPE on captions that are already normalised.

dalle-mini's tokenizer (`boris/dalle-mini-tokenizer`) is "based on facebook/bart-large-cnn and trained on
captions normalized by dalle-mini": a byte-level BPE with BART's special tokens and `add_prefix_space=False`
(the normaliser has already put a space in front of every caption). We do the same with the `tokenizers`
library, with the special tokens at ids 0..4 (`<s> <pad> </s> <unk> <mask>`) and the 256 byte symbols right
after them, so any text, in any script, encodes without `<unk>`.

Normalise the captions with the same `NormalizerConfig` you pass here (e.g. "multilingual" for our own
multilingual captions): the config is written next to the vocabulary, so the folder fixes the whole text path.
The result depends only on the captions and the config: training twice gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import models, pre_tokenizers, trainers
from tqdm import tqdm

from crayonbox.errors import CrayonboxError
from crayonbox.text.normalize import NormalizerConfig
from crayonbox.text.tokenizer import BART_SPECIAL_TOKENS, TEXT_LENGTH, Tokenizer, byte_level_bpe

BYTE_ALPHABET_SIZE = 256


@dataclass
class BPETrainingConfig:
    """How to train the BPE."""

    vocab_size: int = 16384  # ids in all: 5 special tokens + 256 bytes + merges (dalle-mini's has 50264)
    min_frequency: int = 2  # a pair must occur this often to be merged
    # How words are cut before merging (crayonbox.text.tokenizer.WORD_SPLITS). "auto": dalle-mini's "gpt2"
    # when the normaliser runs unidecode (ASCII text, where both splits agree), else "letters_with_marks",
    # because GPT-2's split cuts Devanagari, Bengali, Thai... at every vowel sign and no merge can undo that.
    word_split: str = "auto"
    show_progress: bool = True  # tqdm over the captions, and the trainer's own bar over the merges

    def resolved_word_split(self, normalizer: NormalizerConfig) -> str:
        """The word split to train with, for captions normalised by `normalizer`."""
        if self.word_split != "auto":
            return self.word_split
        return "gpt2" if "unidecode" in normalizer.enabled_steps else "letters_with_marks"


def train_bpe(
    captions: Iterable[str],
    folder: str | Path,
    config: BPETrainingConfig | None = None,
    normalizer: NormalizerConfig | None = None,
    text_length: int = TEXT_LENGTH,
) -> Tokenizer:
    """Train on `captions` (already normalised with `normalizer`), save to `folder`, and return the tokenizer.

    `folder` receives tokenizer.json, vocab.json, merges.txt and normalizer.json.
    """
    config = config or BPETrainingConfig()
    normalizer = normalizer or NormalizerConfig()
    word_split = config.resolved_word_split(normalizer)
    smallest = len(BART_SPECIAL_TOKENS) + BYTE_ALPHABET_SIZE
    if config.vocab_size <= smallest:
        raise CrayonboxError(f"vocab_size {config.vocab_size} leaves no room for merges: it must exceed "
                             f"{smallest} (5 special tokens + 256 bytes)")

    bare = byte_level_bpe(models.BPE(), word_split)  # empty: no special tokens yet
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=list(BART_SPECIAL_TOKENS),  # listed first, so they get ids 0..4
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=config.show_progress,
    )
    lines = tqdm(captions, desc="reading captions", unit=" captions", disable=not config.show_progress)
    bare.train_from_iterator(lines, trainer=trainer)
    if bare.get_vocab_size() == smallest:
        raise CrayonboxError("the captions gave no merges: train on more (or longer) captions")

    # Rebuild around the trained model so the special tokens and the <s> $A </s> template are registered.
    tokenizer = Tokenizer(byte_level_bpe(bare.model, word_split), normalizer, text_length)
    tokenizer.save(folder)
    return tokenizer
