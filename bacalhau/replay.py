"""Freshness of signed messages: each is taken once, and only near the receiver's clock.

`ReplayWindow` is shared by signed client calls (`callsign`), peer packets and gossip
(`network`). A message names a time and a unique key (sender, nonce); the window takes it if the
time is within `window` of now, either way, and the key was not taken before. Keys are
remembered for as long as their message could still be taken. When more than `max_keys` are
remembered, the oldest are forgotten and every message dated at or before the newest forgotten
one is refused from then on: memory stays bounded and a replay is never taken, at the price of
a shorter window under a flood. Times are plain integers, in whatever unit the caller uses.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Final

STALE: Final = "stale"
FUTURE: Final = "future"
REPEATED: Final = "repeated"


class ReplayWindow:
    def __init__(self, window: int, max_keys: int) -> None:
        self.window = window
        self.max_keys = max_keys
        self._taken: OrderedDict[Hashable, int] = OrderedDict()  # in the order taken
        self._floor: int | None = None  # messages dated at or before this are refused

    def __len__(self) -> int:
        return len(self._taken)

    def check(self, key: Hashable, t: int, now: int) -> str | None:
        """None if the message is fresh (and now taken); else STALE, FUTURE or REPEATED."""
        if t < now - self.window:
            return STALE
        if t > now + self.window:
            return FUTURE
        self._expire(now)
        if self._floor is not None and t <= self._floor:
            return STALE
        if key in self._taken:
            return REPEATED
        self._taken[key] = t
        if len(self._taken) > self.max_keys:
            _, oldest = self._taken.popitem(last=False)
            # Not above now: a sender's own future-dated messages must not lock others out.
            self._raise_floor(min(oldest, now))
        return None

    def _expire(self, now: int) -> None:
        """Forget keys whose messages are outside the window (refused as stale anyway)."""
        cutoff = now - self.window
        while self._taken:
            key, t = next(iter(self._taken.items()))
            if t >= cutoff:
                break
            del self._taken[key]

    def _raise_floor(self, t: int) -> None:
        self._floor = t if self._floor is None else max(self._floor, t)
