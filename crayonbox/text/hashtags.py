"""Split a hashtag body into words ("sunsetbeach" → "sunset beach"), as dalle-mini's `HashtagProcessor` does.

dalle-mini (DM `text.py:21-83`, adapted from the wordninja library) finds the split with the lowest total word
cost by dynamic programming, where a word's cost is `log(rank + 1)` in an English Wikipedia frequency list
and an unknown word costs infinity. It downloads that list from the hub at run time; we use the ranked English
list that the `wordfreq` package ships instead ("best" list, ~321k words), so nothing touches the network. The
lists differ, so a rare hashtag may split differently from the original; common words split the same.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

# Pieces of a hashtag are split on anything but ASCII letters, digits and the apostrophe (as in dalle-mini).
_SPLIT_RE = re.compile(r"[^a-zA-Z0-9']+")
_UNKNOWN_COST = math.inf


@lru_cache(maxsize=1)
def word_costs() -> tuple[dict[str, float], int]:
    """Return ({word: log(rank + 1)}, longest word length) from wordfreq's ranked English list, built once.

    Only ASCII words are kept: the splitter only ever looks up ASCII substrings. wordfreq is imported here, on
    the first hashtag, not with the module: its import alone takes ~0.16 s of every command's start.
    """
    from wordfreq import iter_wordlist

    words = (word for word in iter_wordlist("en", wordlist="best") if word.isascii())
    costs: dict[str, float] = {}
    for rank, word in enumerate(words):
        costs.setdefault(word, math.log(rank + 1))
    return costs, max(len(word) for word in costs)


def split_hashtag(body: str) -> str:
    """Split a hashtag body (without the '#') into space-separated words of lowest total word cost."""
    pieces = [_split_piece(piece) for piece in _SPLIT_RE.split(body)]
    return " ".join(word for piece in pieces for word in piece)


def _split_piece(s: str) -> list[str]:
    """Lowest-cost split of one run of [a-zA-Z0-9'] characters (dalle-mini's `_split`, step for step)."""
    costs, max_word = word_costs()

    def best_match(i: int, cost: list[float]) -> tuple[float, int]:
        # The best (total cost, length) of a word ending at position i, given the best costs before it.
        candidates = enumerate(reversed(cost[max(0, i - max_word) : i]))
        return min((c + costs.get(s[i - k - 1 : i].lower(), _UNKNOWN_COST), k + 1) for k, c in candidates)

    cost = [0.0]
    for i in range(1, len(s) + 1):
        cost.append(best_match(i, cost)[0])

    # Backtrack from the end. Like dalle-mini, re-attach a split "'s" and glue digit runs back together
    # ("2022" must not become "2 0 2 2"); a lone apostrophe is never glued to its neighbour.
    words: list[str] = []
    i = len(s)
    while i > 0:
        _, k = best_match(i, cost)
        word = s[i - k : i]
        glued = False
        if word != "'" and words and (words[-1] == "'s" or (s[i - 1].isdigit() and words[-1][0].isdigit())):
            words[-1] = word + words[-1]
            glued = True
        if not glued:
            words.append(word)
        i -= k
    return words[::-1]
