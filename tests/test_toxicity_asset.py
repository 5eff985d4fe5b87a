"""toxicity_scores through Dagster against the local Perspective server: faults, resume after SIGKILL, idempotence."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance

from bsky_warehouse.checkpoint import Checkpoint
from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.project import REPO_ROOT, SAMPLE_DIR
from bsky_warehouse.resources.perspective import PerspectiveResource
from bsky_warehouse.resources.warehouse import WarehouseResource
from tests.factories import post_event, write_archive
from tests.servers.perspective_server import DEFAULT_KEY, PerspectiveServer

pytestmark = pytest.mark.integration
DAY = date(2024, 3, 16)
INGEST = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts"]
PERSPECTIVE = {"ops": {"toxicity_scores": {"config": {"scorer": "perspective"}}}}


def eligible_texts(db: str, day: date) -> dict[str, str]:
    con = duckdb.connect(db, read_only=True)
    try:
        rows = con.execute(
            "SELECT uri, text FROM cleaned_posts WHERE partition_date = $d AND passes_filters", {"d": day}
        ).fetchall()
    finally:
        con.close()
    return dict(rows)


def perspective_rows(db: str) -> list[tuple]:
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute(
            "SELECT uri, status, reason, prob_toxicity FROM toxicity_scores WHERE scorer = 'perspective' ORDER BY uri"
        ).fetchall()
    finally:
        con.close()


def test_perspective_faults_end_in_exactly_one_row_per_post_and_reruns_ask_nothing(tmp_path):
    archive = tmp_path / "archive"
    texts = {
        "ok1": "a perfectly calm post about gardening",
        "flaky": "@@500x2 the server fails twice on this one",
        "dropped": "@@dropx1 the connection drops once",
        "garbled": "@@malformedx1 a garbled body once",
        "throttled": "@@429x1 throttled once, with Retry-After",
        "nolang": "@@lang:xx a language no attribute supports",
        "icelandic": "@@lang:is only production attributes here",
        "short": "ok",
    }
    write_archive(archive / "d.jsonl", [post_event(k, text=v) for k, v in texts.items()])
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    window = DayWindow.for_day("2024-03-10")
    with PerspectiveServer(qps=40, retry_after=0.2) as server:
        perspective = PerspectiveResource(
            api_key=DEFAULT_KEY, base_url=server.url, qps=40, languages=[], use_post_langs=False,
            backoff_base_s=0.05, backoff_max_s=0.5, timeout_s=5, min_text_length=1,
        )  # fmt: skip
        run = run_window(window, instance, db_path=db, archive_dir=str(archive), run_config=PERSPECTIVE,
                         resources={"perspective": perspective}, assets=[*INGEST, "toxicity_scores"])  # fmt: skip
        assert run["success"]
        rows = {uri.rsplit("/", 1)[1]: (status, reason, prob) for uri, status, reason, prob in perspective_rows(db)}
        assert set(rows) == set(texts) - {"short"}  # "ok" is below the cleaning minimum and never eligible
        for key in ("ok1", "flaky", "dropped", "garbled", "throttled"):
            assert rows[key][0] == "ok" and 0 <= rows[key][2] <= 1, key
        assert rows["nolang"][:2] == ("failed", "language_not_supported")
        assert rows["icelandic"][0] == "ok"
        assert server.ok_counts[texts["flaky"]] == 1 and server.counts[texts["flaky"]] == 3
        before = sum(server.counts.values())

        rerun = run_window(window, instance, db_path=db, archive_dir=str(archive), run_config=PERSPECTIVE,
                           resources={"perspective": perspective}, assets=[*INGEST, "toxicity_scores"])  # fmt: skip
        assert rerun["success"]
        assert sum(server.counts.values()) == before  # nothing re-asked: ok rows and deterministic failures stay
        assert perspective_rows(db) == sorted(perspective_rows(db))
        assert len(perspective_rows(db)) == len(rows)


@pytest.mark.parametrize("trial", range(2))
def test_scoring_killed_mid_partition_resumes_without_paying_twice(tmp_path, trial):
    db = str(tmp_path / "wh.duckdb")
    assert run_window(DayWindow.for_day(DAY), DagsterInstance.ephemeral(), db_path=db,
                      archive_dir=str(SAMPLE_DIR), assets=INGEST)["success"]  # fmt: skip
    eligible = eligible_texts(db, DAY)
    kill_after = random.Random(trial).randint(10, len(eligible) - 40)
    checkpoint = Checkpoint(WarehouseResource(path=db).staging_dir, "toxicity_scores", ["perspective", "v1alpha1"], DAY)

    with PerspectiveServer(qps=30) as server:
        env = {**os.environ, "BSKY_WAREHOUSE_DB": db, "PERSPECTIVE_API_KEY": DEFAULT_KEY,
               "PERSPECTIVE_BASE_URL": server.url, "PERSPECTIVE_QPS": "30"}  # fmt: skip
        env["DAGSTER_HOME"] = str(Path(db).parent / "dagster_home")
        command = [sys.executable, "-m", "bsky_warehouse.cli", "materialize", "--start", DAY.isoformat(),
                   "--scorer", "perspective", "--archive", str(SAMPLE_DIR)]  # fmt: skip
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 900  # a hang guard: the run itself must stay alive
        while len(checkpoint.rows()) < kill_after:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        done_before_kill = checkpoint.rows()
        assert len(done_before_kill) >= kill_after
        assert perspective_rows(db) == []  # nothing merged yet: the work lived in the checkpoint

        resumed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

        rows = perspective_rows(db)
        assert sorted(uri for uri, *_ in rows) == sorted(eligible)
        assert all(status == "ok" for _, status, _, _ in rows)
        text_use = Counter(eligible.values())
        for uri in done_before_kill:
            if text_use[eligible[uri]] == 1:
                assert server.counts[eligible[uri]] == 1, uri  # checkpointed: never requested again
        assert not checkpoint.path.exists()  # merged and cleared
