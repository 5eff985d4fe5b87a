"""Progress of the long steps (embedding, scoring, labelling, author scans), so a run is never silent for minutes.

A step reports to two places: Dagster's log (the run's page in the UI, and `dagster` logs), at most one line every
`every_s` seconds plus one at the end, and, when the process's stderr is a terminal (a researcher at the CLI), a
one-line bar redrawn in place. Daemon and UI runs have no terminal and get the log lines only. The text is built
by pure functions, tested without a terminal or a clock.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 24
# A terminal bar redraws at most this often: scoring advances once per post, thousands a second.
DRAW_EVERY_S = 0.1


def eta_s(done: int, total: int, elapsed_s: float) -> float | None:
    """Seconds left at the rate so far; None before there is a rate to go by."""
    if done <= 0 or elapsed_s <= 0:
        return None
    return max(0, total - done) * elapsed_s / done


def per_s(rate: float) -> str:
    """A rate as a researcher reads it: `86`, `1,200`, and under one a second (an LLM, a throttled API) `0.25`
    rather than `0`, which would read as stalled."""
    return f"{rate:,.0f}" if rate >= 1 else f"{rate:.2g}"


def progress_line(what: str, done: int, total: int | None, elapsed_s: float, unit: str = "posts") -> str:
    """`embedding 2024-03-13: 1,200/5,000 posts (24%), 85/s, ~45 s left`; with no total known (an account's
    feed, paged until it ends) `scan alice.bsky.social: 1,200 posts, 85/s`."""
    rate = f", {per_s(done / elapsed_s)}/s" if done and elapsed_s > 0 else ""
    if total is None:
        return f"{what}: {done:,} {unit}{rate}"
    share = f" ({done / total:.0%})" if total else ""
    left = eta_s(done, total, elapsed_s)
    eta = f", ~{left:,.0f} s left" if left is not None and done < total else ""
    return f"{what}: {done:,}/{total:,} {unit}{share}{rate}{eta}"


def progress_bar(done: int, total: int | None, width: int = BAR_WIDTH) -> str:
    """`[#########---------------]`: the share done, in `width` cells (none known: empty)."""
    if total is None:
        return "[" + "?" * width + "]"
    filled = width if not total else min(width, width * done // total)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class Progress:
    """Counts a step's items as they finish and reports them (see the module docstring).

    `log` is the step's `context.log.info`; `stream` the terminal to draw on (default: stderr, only if it is
    one). Items may be advanced from any one thread at a time; the step calls `close()` once done, which logs
    the last line (so the item that completes the count logs nothing of its own).
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        log: Callable[[str], None] | None = None,
        stream: TextIO | None = None,
        every_s: float = 15.0,
        unit: str = "posts",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.total, self.log, self.every_s, self.unit, self.clock = what, total, log, every_s, unit, clock
        terminal = stream if stream is not None else sys.stderr
        self.stream = terminal if _is_terminal(terminal) else None
        self.done = 0
        self.started = self.last_logged = clock()
        self.last_drawn: float | None = None

    def add_total(self, n: int) -> None:
        """Grow the total by `n` posts learnt of mid-step (negative: posts found not to need work after all).

        A step that learns its work a batch at a time (scoring and labelling claim days in batches) starts at 0
        and adds each batch as it claims it, rather than going without a total: a one-day run, the daily
        schedule's, then shows its exact share and time left from its first line, and a window's run shows
        them for the days claimed so far, while a step with no total at all could show only a count and a rate.
        """
        self.total = (self.total or 0) + n

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if self.stream is not None and (self.last_drawn is None or now - self.last_drawn >= DRAW_EVERY_S):
            self._draw(self.stream, now)
        unfinished = self.total is None or self.done < self.total
        if self.log is not None and unfinished and now - self.last_logged >= self.every_s:
            self.last_logged = now
            self.log(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (self.clock() if now is None else now) - self.started
        return progress_line(self.what, self.done, self.total, elapsed, self.unit)

    def close(self) -> None:
        """The last line: to the log always (a run's record says how long the step took), and the bar ended."""
        now = self.clock()
        if self.stream is not None and self.last_drawn is not None:
            self._draw(self.stream, now)
            self.stream.write("\n")
            self.stream.flush()
        if self.log is not None and self.total != 0:
            self.log(f"{self.line(now)}, done in {now - self.started:,.1f} s")

    def _draw(self, stream: TextIO, now: float) -> None:
        stream.write(f"\r{progress_bar(self.done, self.total)} {self.line(now)}\033[K")
        stream.flush()
        self.last_drawn = now


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
