"""Bounded waits on the bot's own state, for the sandbox, the demo and tests.

Emulators announce what they receive; the bot's database does not, so a wait on it
re-checks a condition until it holds or the bound runs out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(
    pred: Callable[[], bool], bound_s: float = 10.0, *, interval_s: float = 0.0
) -> bool:
    """Re-check ``pred`` (yielding to the bot in between) until it holds or ``bound_s`` passes.

    ``interval_s`` 0 only yields to the event loop, so tests never sleep on the wall clock.
    """
    deadline = time.monotonic() + bound_s
    while not pred():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval_s)
    return True
