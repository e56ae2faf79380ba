"""The one retry policy of provisioning's HTTP clients (Vast.ai, Compute Engine, Cloud Storage).

Exponential backoff with full jitter, as AWS's "Exponential Backoff and Jitter" recommends: many
clients retrying one overloaded API spread out instead of arriving in waves. ``attempts`` counts
the first try, so ``RetryPolicy(attempts=1)`` never retries. Which failures are worth another try
is the client's to say (an idempotent GET after a 503, a resumable upload after a dropped
connection); how often and how long to wait is said here only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try number ``attempt`` (1: the first retry)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))

    def exhausted(self, failures: int) -> bool:
        """True when ``failures`` tries have failed and no try is left."""
        return failures >= self.attempts
