"""The one reading of rate-limit headers and the one backoff every HTTP client uses."""

from __future__ import annotations

import random

import pytest

from bsky_warehouse.http_retry import backoff_delay, retry_after_s

NOW = 1445412470.0  # 2015-10-21 07:27:50 UTC


def test_retry_after_seconds_and_http_dates() -> None:
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after": " 0.5 "}) == 0.5
    assert retry_after_s({"retry-after": "-3"}) == 0.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=NOW) == pytest.approx(10.0)
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=NOW + 60) == 0.0
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({"retry-after": "nan"}) is None
    assert retry_after_s({}) is None


def test_retry_after_openai_ms_and_atproto_reset_win_in_that_order() -> None:
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({"ratelimit-reset": str(NOW + 30), "retry-after": "9"}, now=NOW) == pytest.approx(30.0)
    assert retry_after_s({"ratelimit-reset": str(NOW - 5)}, now=NOW) == 0.0
    assert retry_after_s({"retry-after-ms": "inf", "retry-after": "4"}) == 4.0


def test_backoff_grows_with_jitter_and_cap() -> None:
    rng = random.Random(1)
    for attempt in range(8):
        ceiling = min(5.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, 0.5, 5.0, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1
