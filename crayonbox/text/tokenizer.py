"""Prompt → text token ids, the way dalle-mini's processor builds them (DM `processor.py`, `tokenizer.py`).

A model folder fully determines the text path: `tokenizer.json` (or `vocab.json` + `merges.txt`, a byte-level
BPE with BART's special tokens) plus `normalizer.json` (which normalisation steps run, see `normalize.py`).

The conditional ids are `<s> BPE(normalise(prompt)) </s>`, padded with `<pad>` to `text_length` (64); a prompt
that is too long loses tokens from its end, never its `</s>` (HF truncation). The unconditional ids are those
of the raw `""` with no normaliser: `<s></s>` + pads. Because the normaliser always adds a leading space, a
blank prompt encodes as `<s> Ġ </s>`, which is *not* the unconditional input; `EncodedPrompt.notes` says so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors

from crayonbox.errors import CrayonboxError
from crayonbox.text.normalize import NormalizerConfig, TextNormalizer
from crayonbox.text.notes import normalize_with_notes
from crayonbox.text.vocabulary import WordCheck

BART_SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # ids 0..4 when we train
TEXT_LENGTH = 64  # max_text_length of both released models


@dataclass
class EncodedPrompt:
    """One prompt's encoder input, with everything needed to explain it."""

    prompt: str  # what the user typed
    normalized: str  # what the BPE saw
    ids: list[int]  # <s> … </s> then <pad>s, exactly text_length long
    attention_mask: list[int]  # 1 for real tokens, 0 for padding
    tokens: list[str]  # the kept tokens as BPE strings (e.g. "Ġred"), <s> and </s> included, no padding
    cut_tokens: list[str] = field(default_factory=list)  # tokens lost to truncation, in order
    cut_text: str = ""  # the same, decoded back to text, for a warning
    notes: list[str] = field(default_factory=list)  # what the normaliser and tokenizer did, in plain words

    @property
    def was_cut(self) -> bool:
        """Whether the prompt was longer than text_length and lost tokens."""
        return bool(self.cut_tokens)


# How text is cut into words before the BPE; merges never cross these cuts.
# "gpt2" is GPT-2's regex, which dalle-mini's tokenizer uses. Its words are runs of \p{L}, so it cuts at every
# combining mark (\p{M}): Devanagari "महिला" becomes 4 words ("मह", "ि", "ल", "ा") that no merge can join.
# "letters_with_marks" is the same regex with marks kept inside words, for BPEs trained on non-Latin captions.
# On ASCII text (everything the official normaliser outputs) the two split identically.
_CONTRACTIONS = r"'s|'t|'re|'ve|'m|'ll|'d"
WORD_SPLITS: dict[str, str] = {
    "gpt2": _CONTRACTIONS + r"| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    "letters_with_marks": _CONTRACTIONS + r"| ?[\p{L}\p{M}]+| ?\p{N}+| ?[^\s\p{L}\p{M}\p{N}]+|\s+(?!\S)|\s+",
}


def byte_level_bpe(model: models.BPE, word_split: str = "gpt2") -> tokenizers.Tokenizer:
    """Wrap a BPE model in dalle-mini's byte-level pipeline (no prefix space, BART specials kept whole).

    Training and loading from `vocab.json` + `merges.txt` both go through here, so both give identical ids.
    `word_split` names a pattern of WORD_SPLITS.
    """
    if word_split not in WORD_SPLITS:
        raise CrayonboxError(f"unknown word split {word_split!r}: use one of {', '.join(WORD_SPLITS)}")
    backend = tokenizers.Tokenizer(model)
    if word_split == "gpt2":
        # The normaliser already put the leading space in: add_prefix_space=False, as in dalle-mini.
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(tokenizers.Regex(WORD_SPLITS[word_split]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    backend.decoder = decoders.ByteLevel()
    vocab = backend.get_vocab(with_added_tokens=False)
    backend.add_special_tokens([token for token in BART_SPECIAL_TOKENS if token in vocab])
    if "<s>" in vocab and "</s>" in vocab:
        # Only for users of the bare tokenizer.json; `Tokenizer` adds <s> and </s> itself.
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
        )
    return backend


class Tokenizer:
    """Normaliser + byte-level BPE + BART framing: prompt → `EncodedPrompt`."""

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        normalizer: NormalizerConfig | None = None,
        text_length: int = TEXT_LENGTH,
        words: WordCheck | None = None,
    ):
        """`backend` is a `tokenizers.Tokenizer` whose vocabulary holds `<s>`, `<pad>`, `</s>` and `<unk>`.
        `words`: how to tell words the model does not know (see `vocabulary.py`); None adds no such notes."""
        if text_length < 2:
            raise CrayonboxError(f"text_length must be at least 2 (room for <s> and </s>), got {text_length}")
        self.backend = backend
        # A tokenizer.json may carry its own padding/truncation settings; ours are applied explicitly below.
        self.backend.no_padding()
        self.backend.no_truncation()
        self.normalizer_config = normalizer or NormalizerConfig()
        self.normalizer = TextNormalizer(self.normalizer_config)
        self.text_length = text_length
        self.words = words
        vocab = backend.get_vocab(with_added_tokens=True)
        missing = [token for token in BART_SPECIAL_TOKENS[:4] if token not in vocab]
        if missing:
            raise CrayonboxError(f"the tokenizer vocabulary lacks {missing}: not a BART-style tokenizer")
        # Read the ids from the vocabulary rather than assuming 0..3 (min-dalle does the same).
        self.bos_id, self.pad_id, self.eos_id, self.unk_id = (vocab[t] for t in BART_SPECIAL_TOKENS[:4])

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        normalizer: NormalizerConfig | None = None,
        text_length: int = TEXT_LENGTH,
        words: WordCheck | None = None,
    ) -> Tokenizer:
        """Load `tokenizer.json`, or else `vocab.json` + `merges.txt`, and `normalizer.json` from `folder`.

        `normalizer` overrides the folder's `normalizer.json`; a folder without one (e.g. the official
        dalle-mini files) gets the official normaliser.
        """
        folder = Path(folder)
        if (folder / "tokenizer.json").exists():
            try:
                backend = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
            except Exception as e:  # the Rust side raises a bare Exception for a malformed file
                raise CrayonboxError(f"cannot read {folder / 'tokenizer.json'}: {e}") from e
        elif (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
            model = models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
            backend = byte_level_bpe(model)
        else:
            raise CrayonboxError(f"no tokenizer in {folder}: expected tokenizer.json, or vocab.json and "
                                 "merges.txt; train one with crayonbox.train.tokenizer.train_bpe")
        return cls(backend, normalizer or NormalizerConfig.load(folder), text_length, words)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def whole_words(self) -> list[str]:
        """The vocabulary's whole-word tokens (`Ġword`, letters only) as words, sorted."""
        vocab = self.backend.get_vocab(with_added_tokens=False)
        words = {self.backend.decode([i]).strip() for token, i in vocab.items() if token.startswith("Ġ")}
        return sorted(w for w in words if w.isalpha())

    def encode(self, prompt: str) -> EncodedPrompt:
        """Normalise and encode one prompt (the conditional branch)."""
        report = normalize_with_notes(prompt, self.normalizer)
        encoded = self._frame(prompt, report.final, report.notes)
        if encoded.ids == self.unconditional().ids:
            encoded.notes.append("ids equal the unconditional branch <s> </s>: guidance has nothing to push "
                                 "against, so the sample is unconditional")
        elif report.final.strip() == "":
            encoded.notes.append(f"blank prompt: ids are {' '.join(encoded.tokens)}, not the unconditional "
                                 "<s> </s>; guidance (uncond + scale·(cond − uncond)) amplifies the gap")
        return encoded

    def encode_batch(self, prompts: Iterable[str]) -> list[EncodedPrompt]:
        """`encode` for each prompt."""
        return [self.encode(prompt) for prompt in prompts]

    def unconditional(self) -> EncodedPrompt:
        """The unconditional branch: the raw `""` without the normaliser, i.e. `<s></s>` + pads.

        dalle-mini's processor builds its `input_ids_uncond` exactly so (DM `processor.py:22-31`), and its
        training blanked captions to `""` after normalisation, so this is the input the model learnt for "no
        caption".
        """
        note = "unconditional branch: the raw '' with no normaliser, as dalle-mini builds it"
        return self._frame("", "", [note])

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids, special tokens and padding left out."""
        return self.backend.decode(list(ids), skip_special_tokens=True)

    def save(self, folder: str | Path) -> None:
        """Write tokenizer.json, vocab.json, merges.txt and normalizer.json into `folder`, each atomically.

        vocab.json + merges.txt (for GPT-2-style tools such as min-dalle) hold no word split: alone, they give
        the same ids as tokenizer.json only for a "gpt2" split or ASCII text.
        """
        if not isinstance(self.backend.model, models.BPE):
            raise CrayonboxError("only BPE tokenizers can be saved as vocab.json + merges.txt")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=folder))
        try:
            self.backend.save(str(scratch / "tokenizer.json"))
            self.backend.model.save(str(scratch))  # vocab.json + merges.txt
            for name in ("tokenizer.json", "vocab.json", "merges.txt"):
                os.replace(scratch / name, folder / name)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.normalizer_config.save(folder)

    def _frame(self, prompt: str, text: str, notes: list[str]) -> EncodedPrompt:
        """BPE `text`, then add <s> and </s>, cut to text_length keeping </s>, and pad."""
        content = self.backend.encode(text, add_special_tokens=False)
        notes = list(notes)
        if self.words is not None:
            notes += self.words.notes(text, content)
        room = self.text_length - 2
        kept_ids, cut_ids = content.ids[:room], content.ids[room:]
        ids = [self.bos_id, *kept_ids, self.eos_id]
        tokens = ["<s>", *content.tokens[:room], "</s>"]
        cut_text = ""
        if cut_ids:
            cut_text = self.decode(cut_ids)
            notes.append(f"prompt is {len(content.ids) + 2} tokens, over the {self.text_length}-token limit: "
                         f"cut the last {len(cut_ids)} ({cut_text!r}); </s> is kept last")
        padding = self.text_length - len(ids)
        return EncodedPrompt(
            prompt=prompt,
            normalized=text,
            ids=ids + [self.pad_id] * padding,
            attention_mask=[1] * len(ids) + [0] * padding,
            tokens=tokens,
            cut_tokens=list(content.tokens[room:]),
            cut_text=cut_text,
            notes=notes,
        )

