""" "Did you mean ...?": the known name closest to a misspelt one.

A load test is typed by people, so a field or a config key is now and then misspelt
(``concurency``, ``request_timout``). The messages that refuse them name the known name that
is closest, when one is close enough to be what was meant: at most ``max_edits`` edits away,
an edit being one character inserted, deleted or replaced, or two neighbours swapped (the
optimal string alignment distance, a restricted Damerau-Levenshtein); a word of four
characters or fewer gets one edit only (two would make ``id`` a misspelt ``add``). Case does
not count (``Concurrency`` is ``concurrency``), and neither does the difference between
snake_case and lowerCamelCase when the caller gives both spellings of a name.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_EDITS = 2


def edit_distance(a: str, b: str, limit: int = MAX_EDITS) -> int:
    """The optimal string alignment distance of ``a`` and ``b``, or ``limit + 1`` when it is
    more than ``limit`` (the work stops there: cheap on long, unrelated words)."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    if a == b:
        return 0
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], previous2[j - 2] + 1)
        if min(row) > limit:
            return limit + 1
        previous2, previous = previous, row
    return min(previous[-1], limit + 1)


def closest(
    word: str, known: Iterable[tuple[str, str]] | Iterable[str], max_edits: int = MAX_EDITS
) -> str | None:
    """The known name closest to ``word`` (the first of equals), if at most ``max_edits``
    edits away; None otherwise, or when ``word`` is itself known.

    ``known`` holds names, or (spelling, name) pairs: a name written several ways (snake_case
    and lowerCamelCase) is found by any of them, and the name is what is suggested.
    """
    lowered = word.lower()
    max_edits = min(max_edits, 1 if len(word) <= 4 else max_edits)
    best: str | None = None
    best_distance = max_edits + 1
    for item in known:
        spelling, name = (item, item) if isinstance(item, str) else item
        if spelling == word:
            return None
        distance = edit_distance(lowered, spelling.lower(), max_edits)
        if distance < best_distance:
            best, best_distance = name, distance
    return best


def did_you_mean(word: str, known: Iterable[tuple[str, str]] | Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or "" when none is close."""
    name = closest(word, known)
    return f" (did you mean {name!r}?)" if name is not None else ""
