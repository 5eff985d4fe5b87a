"""Progress of long steps: the text a researcher reads, the log lines' spacing, and a bar only on a terminal."""

from __future__ import annotations

import io

from bsky_warehouse.progress import Progress, eta_s, progress_bar, progress_line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_line_gives_count_share_rate_and_time_left():
    assert progress_line("embedding 2024-03-13", 1200, 5000, 14.0) == (
        "embedding 2024-03-13: 1,200/5,000 posts (24%), 86/s, ~44 s left"
    )
    assert progress_line("scoring", 0, 10, 0.0) == "scoring: 0/10 posts (0%)"
    assert progress_line("scan", 3, 3, 2.0, unit="pages") == "scan: 3/3 pages (100%), 2/s"
    assert progress_line("nothing", 0, 0, 1.0) == "nothing: 0/0 posts"
    assert progress_line("scan alice.test", 1200, None, 10.0) == "scan alice.test: 1,200 posts, 120/s"
    assert progress_line("labelling", 3, 30, 12.0) == "labelling: 3/30 posts (10%), 0.25/s, ~108 s left"


def test_time_left_needs_a_rate_and_never_goes_negative():
    assert eta_s(0, 10, 5.0) is None and eta_s(5, 10, 0.0) is None
    assert abs(eta_s(5, 10, 5.0) - 5.0) < 1e-9
    assert eta_s(12, 10, 5.0) == 0.0


def test_the_bar_fills_with_the_share_done():
    assert progress_bar(0, 10, width=10) == "[----------]"
    assert progress_bar(5, 10, width=10) == "[#####-----]"
    assert progress_bar(15, 10, width=10) == "[##########]"
    assert progress_bar(0, 0, width=4) == "[####]"
    assert progress_bar(7, None, width=4) == "[????]"


def test_log_lines_are_spaced_and_the_last_says_how_long():
    clock, logged = Clock(), []
    progress = Progress("labeling 2024-03-13", 100, log=logged.append, stream=io.StringIO(), every_s=10, clock=clock)
    for _ in range(4):
        clock.now += 3
        progress.advance(10)
    assert logged == ["labeling 2024-03-13: 40/100 posts (40%), 3/s, ~18 s left"]  # at 12 s, not at 3, 6, 9
    clock.now += 2
    progress.close()
    assert logged[1:] == ["labeling 2024-03-13: 40/100 posts (40%), 3/s, ~21 s left, done in 14.0 s"]


def test_a_bar_is_drawn_in_place_on_a_terminal_only():
    clock = Clock()
    terminal = Terminal()
    progress = Progress("scoring", 4, stream=terminal, clock=clock)
    for _ in range(4):
        clock.now += 1
        progress.advance()
    progress.close()
    drawn = terminal.getvalue()
    assert drawn.count("\r") == 5 and drawn.endswith("\n")
    assert "[" + "#" * 24 + "] scoring: 4/4 posts (100%)" in drawn

    # Advanced once per post, thousands a second: the bar is redrawn at most every DRAW_EVERY_S, and ends exact.
    fast = Terminal()
    busy = Progress("scoring", 1000, stream=fast, clock=clock)
    for _ in range(1000):
        busy.advance()
    clock.now += 1
    busy.close()
    assert fast.getvalue().count("\r") == 2 and "] scoring: 1,000/1,000 posts (100%)" in fast.getvalue()

    piped = io.StringIO()
    quiet = Progress("scoring", 4, stream=piped, clock=clock)
    quiet.advance(4)
    quiet.close()
    assert piped.getvalue() == ""


def test_a_total_learnt_batch_by_batch_grows_and_the_last_line_has_it_all():
    clock, logged = Clock(), []
    progress = Progress("scoring p 2024-03-10..2024-03-11", 0, log=logged.append, every_s=10, clock=clock)
    progress.add_total(4)  # the first day's batch, claimed
    clock.now += 12
    progress.advance(2)
    assert logged == ["scoring p 2024-03-10..2024-03-11: 2/4 posts (50%), 0.17/s, ~12 s left"]
    progress.add_total(6)  # the next day's, once the first is merged
    progress.add_total(-2)  # posts found to need no work after all (a plan leaves them out)
    progress.advance(6)
    clock.now += 3
    progress.close()
    assert progress.total == 8
    assert logged[1:] == ["scoring p 2024-03-10..2024-03-11: 8/8 posts (100%), 0.53/s, done in 15.0 s"]

    unknown = Progress("scan", None, log=logged.append, clock=clock)
    unknown.add_total(3)
    assert unknown.total == 3


def test_a_step_that_never_learns_of_any_work_logs_nothing():
    logged: list[str] = []
    progress = Progress("labelling openai 2024-03-10", 0, log=logged.append, clock=Clock())
    progress.add_total(0)
    progress.close()
    assert logged == []
