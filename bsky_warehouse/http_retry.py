"""How long to wait before retrying an HTTP call: one reading of the servers' rate-limit headers, one backoff.

Perspective, the OpenAI-compatible LLM servers and the Bluesky AppView each say "come back later" in their own
header; reading them in one place keeps every client honouring all of them the same way.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping


def _seconds(value: str | None) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) else None


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, from the first header present of: `retry-after-ms` (OpenAI), `ratelimit-reset` (unix
    seconds, atproto services), `Retry-After` (delta-seconds or an HTTP date). None when none is readable."""
    now = time.time() if now is None else now
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return max(0.0, ms / 1000)
    reset = _seconds(headers.get("ratelimit-reset"))
    if reset is not None:
        return max(0.0, reset - now)
    value = headers.get("retry-after")
    seconds = _seconds(value)
    if seconds is None and value and value.strip():
        try:
            seconds = email.utils.parsedate_to_datetime(value.strip()).timestamp() - now
        except (TypeError, ValueError):
            return None
    return None if seconds is None else max(0.0, seconds)


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half fixed so waits really grow, half random so requests that
    failed together do not all come back at the same instant."""
    ceiling = min(max_s, base_s * (2**attempt))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
