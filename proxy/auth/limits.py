"""Sign-in starts and callbacks per client address: a token bucket each, bounded in number.

Each start costs the issuer a page and the proxy a sealed cookie; each callback costs a token
request and a signature check. A browser signing in needs a few of each; a script needs thousands.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["AttemptLimiter"]

# Addresses remembered; past it the least recently seen is forgotten (and starts afresh).
MAX_ADDRESSES = 10_000


class AttemptLimiter:
    def __init__(
        self, per_minute: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self.clock = clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def allow(self, address: str) -> bool:
        now = self.clock()
        tokens, then = self.buckets.pop(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        allowed = tokens >= 1.0
        self.buckets[address] = (tokens - 1.0 if allowed else tokens, now)
        if len(self.buckets) > MAX_ADDRESSES:
            self.buckets.popitem(last=False)
        return allowed
