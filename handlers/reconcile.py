"""Which stored messages a platform no longer has: deleted while Rapport was away.

Neither Discord nor Slack replays a delete that happened while nobody listened, so after
a gap an adapter reads a channel's recent history and this decides, platform-neutrally,
which stored messages are gone. A bounded read covers only part of the history; nothing
outside what it covered is judged, and an empty read proves nothing (no permission, an
API hiccup), so it erases nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Literal


def deleted_while_away(
    stored: Collection[str],
    read: Collection[str],
    *,
    complete: bool,
    read_from: Literal["oldest", "newest"],
    order: Callable[[str], float],
) -> list[str]:
    """Stored message ids missing from ``read``, in ``order``.

    ``complete``: the read reached the end of the window. When it did not, only the span
    it covered is judged: up to the newest id read when reading started from the oldest
    end (Discord's ``after``), from the oldest id read when it started from the newest
    (Slack's ``conversations.history``).
    """
    if not stored or not read:
        return []
    marks = [order(m) for m in read]
    low, high = min(marks), max(marks)

    def covered(mark: float) -> bool:
        if complete:
            return True
        return mark < high if read_from == "oldest" else mark >= low

    present = set(read)
    return sorted((m for m in stored if m not in present and covered(order(m))), key=order)
