from datetime import datetime, timedelta, timezone

from kernel.retry import RetryPolicy
from mail import outbox
from payments import webhooks

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=timezone.utc)


def test_waits_grow_then_stay_at_the_last_delay() -> None:
    policy = RetryPolicy(max_attempts=20)
    waits = [policy.backoff(attempts) for attempts in range(1, 11)]
    assert waits[:4] == [timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2)]
    assert waits == sorted(waits)
    assert waits[-1] == waits[-2] == timedelta(hours=24)


def test_gives_up_after_the_last_attempt() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.next_attempt(2, NOW) == NOW + timedelta(minutes=5)
    assert policy.next_attempt(3, NOW) is None


def test_the_outbox_and_the_webhook_events_wait_alike() -> None:
    assert outbox.RETRY.delays == webhooks.RETRY.delays
    assert (outbox.RETRY.max_attempts, webhooks.RETRY.max_attempts) == (8, 10)
