"""The nearest known name to a mistyped one, for "did you mean" hints.

A plain :func:`difflib.get_close_matches` misses a typo of one word of a longer name
(``blok`` for ``mask_block`` is only 0.57 alike as a whole), so each name's underscore-separated
words are compared too, and the closest whole name or word wins.

    >>> nearest("blok", ["mask_block", "mask_ratio", "lambda_mask"])
    'mask_block'
    >>> nearest("ratos", ["ratios", "methods"])
    'ratios'
    >>> nearest("zzz", ["ratios", "methods"]) is None
    True
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CUTOFF = 0.6  # difflib's own default: below it names share too little to be worth proposing


def _likeness(typed: str, name: str) -> float:
    parts = [name, *(word for word in name.split("_") if len(word) > 2)]
    return max(difflib.SequenceMatcher(None, typed, part).ratio() for part in parts)


def nearest(typed: str, known: Iterable[str]) -> str | None:
    """The known name most like ``typed`` (a whole name before a word of one, then the first in
    sorted order), or None when none is at least :data:`CUTOFF` alike."""
    scored = [(_likeness(typed, n), difflib.SequenceMatcher(None, typed, n).ratio(), n) for n in sorted(known)]
    best = max(scored, key=lambda score: score[:2], default=None)  # max keeps the first of equals
    return best[2] if best and best[0] >= CUTOFF else None
