"""Which words of a prompt the model can read: notes for words it never learnt, so none is spelled out silently.

A byte-level BPE never fails: a word it has no token for comes out as pieces down to single characters
("gaga" → `Ġg a ga`). The encoder then reads letters it has never seen in that order, and the image ignores
the word or turns it into noise. `WordCheck` looks at how each word of the normalised text was split and says
so in plain words.

Two rules, chosen by what the model folder ships (`ModelFolder.tokenizer` decides):

- closed world (a BPE crayonbox trained on the model's own captions, optionally with the list of concepts the
  model was trained on): a word is known when it is one whole token or a word of that list. Our BPE merges
  every pair that occurs twice until it runs out of pairs or hits its size cap (the shipped model: 1283 ids,
  cap 4096, so it ran out), so the words of the training captions are whole tokens;
- open vocabulary (a converted 50k-vocab BART): only a word split into more than half single characters is
  flagged, because a large BPE splits many real words it knows into two or three pieces.

A bare `Tokenizer` (no `words`) adds no word notes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import tokenizers

SEPARATOR = "·"


@dataclass(frozen=True)
class WordCheck:
    """How to tell a known word. `closed`: the tokenizer's whole-word tokens (plus `extra_words`) are all the
    words the model was trained on; otherwise only the single-character rule applies."""

    closed: bool
    extra_words: frozenset[str] = frozenset()  # training words/concepts the folder lists, lower case

    @classmethod
    def closed_world(cls, extra_words: Iterable[str] = ()) -> WordCheck:
        return cls(True, frozenset(w.lower() for w in extra_words))

    @classmethod
    def open_vocabulary(cls) -> WordCheck:
        return cls(False)

    def notes(self, text: str, encoding: tokenizers.Encoding) -> list[str]:
        """One note per distinct unknown word of `text`, given its BPE `encoding` (no special tokens)."""
        notes: list[str] = []
        seen: set[str] = set()
        for word, pieces in words_and_pieces(text, encoding):
            if word in seen or not word.isalpha():  # numbers, punctuation and "'s" are not words to check
                continue
            seen.add(word)
            note = self._note(word, pieces)
            if note:
                notes.append(note)
        return notes

    def _note(self, word: str, pieces: list[str]) -> str | None:
        split = SEPARATOR.join(pieces)
        if self.closed:
            if len(pieces) == 1 or word.lower() in self.extra_words:
                return None
            return (f'"{word}" is not a word this model knows (split into {split}): it will be ignored or drawn '
                    "as noise")
        singles = sum(len(piece) == 1 for piece in pieces)
        if len(pieces) >= 2 and 2 * singles > len(pieces):
            return (f'"{word}" is split mostly into single characters ({split}): the model probably does not '
                    "know it, so it will be ignored or drawn as noise")
        return None


def words_and_pieces(text: str, encoding: tokenizers.Encoding) -> list[tuple[str, list[str]]]:
    """The pre-tokenizer's words of `text` with the text of each BPE piece, leading spaces stripped.

    Pieces come from the offsets, not the token strings, which are byte-level symbols (`Ġ`, and mojibake for
    non-ASCII); byte tokens of one character share its offsets and count as that one character.
    """
    words: dict[int, list[tuple[int, int]]] = {}
    for word_id, span in zip(encoding.word_ids, encoding.offsets, strict=True):
        if word_id is not None:
            spans = words.setdefault(word_id, [])
            if not spans or spans[-1] != span:
                spans.append(span)
    result = []
    for spans in words.values():
        pieces = [text[start:end].strip() for start, end in spans]
        pieces = [piece for piece in pieces if piece]
        if pieces:
            result.append(("".join(pieces), pieces))
    return result
