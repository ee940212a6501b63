"""One retry policy for work that failed and is tried again later: the email outbox and the
payment providers' webhook events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# Wait after the n-th failed attempt; the last one also applies to any later attempt.
BACKOFF = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(hours=24),
)


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait after each failed attempt, and after how many attempts to give up."""

    max_attempts: int
    delays: tuple[timedelta, ...] = BACKOFF

    def backoff(self, attempts: int) -> timedelta:
        """How long to wait after `attempts` failed attempts."""
        return self.delays[min(max(attempts, 1), len(self.delays)) - 1]

    def gives_up(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def next_attempt(self, attempts: int, now: datetime) -> datetime | None:
        """When to try again after `attempts` failed attempts; None once the policy gives up."""
        return None if self.gives_up(attempts) else now + self.backoff(attempts)
