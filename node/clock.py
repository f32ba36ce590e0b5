"""The slot clock's view of time: wall-clock seconds, turned into trio deadlines.

Slots start at wall-clock times (`genesis_time + s * slot_sec`) while trio
sleeps and cancel scopes run on trio's own clock. Every component asks this
one object, so a test can swap both for one virtual time: trio's MockClock, and
a wall function that reads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio


class WallClock:
    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self.now = wall

    def deadline(self, t: float) -> float:
        """The trio deadline for wall-clock time `t`."""
        return trio.current_time() + (t - self.now())

    async def sleep_until(self, t: float) -> None:
        await trio.sleep(max(0.0, t - self.now()))
