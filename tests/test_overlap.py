"""Two runs of the same partition at once (two real processes) share its checkpoint safely: the second waits for
the first, then finds the work done; nothing paid for is lost, asked twice or stored twice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

import pytest

from bsky_warehouse.checkpoint import Checkpoint, PartitionBusy, claim
from bsky_warehouse.cleaning import FilterRules, clean_day
from bsky_warehouse.ingest import replace_day, stage_lines
from bsky_warehouse.project import REPO_ROOT
from bsky_warehouse.resources.bluesky import read_outcomes
from tests.factories import post_event, write_archive
from tests.processes import wait_for_all

DAY = date(2024, 3, 10)
POSTS = 12

# One "paid" scorer per process: every request is appended to a shared log before its result is emitted, slowly
# enough that the second process starts while the first is mid-partition.
WORKER = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, date, datetime
    from pathlib import Path
    from bsky_warehouse.checkpoint import run_partition
    from bsky_warehouse.resources.warehouse import WarehouseResource

    db, requests, name, signals = sys.argv[1:5]
    signals = Path(signals)

    def work(posts, emit):
        for i, post in enumerate(posts):
            if name == "first" and i == 2:
                # Two results are checkpointed: let the second process start, and give it time to overlap.
                (signals / "first.paused").touch()
                while not (signals / "second.started").exists():
                    time.sleep(0.05)
                time.sleep(2.0)
            with open(requests, "a") as fh:
                fh.write(f"{name} {post.uri}\\n")
            time.sleep(0.1)
            emit(post.uri, {"status": "ok", "reason": None, "scored_at": datetime.now(UTC), "prob_toxicity": 0.5})

    (signals / f"{name}.started").touch()
    stats = run_partition(WarehouseResource(path=db), "toxicity_scores", date(2024, 3, 10),
                          producer={"scorer": "paid"}, version={"scorer_version": "1"}, work=work)
    print(name, "done", stats["requested"], stats["rows"], flush=True)
    """
)


def test_a_second_claim_waits_and_then_fails_naming_the_partition(tmp_path: Path):
    lock = tmp_path / "x.jsonl.lock"
    what = "toxicity_scores for partition 2024-03-10 (scorer=paid)"
    busy = pytest.raises(PartitionBusy, match=r"toxicity_scores for partition 2024-03-10 \(scorer=paid\)")
    with claim(lock, what, timeout_s=5), busy, claim(lock, what, timeout_s=0.3, poll_s=0.05):
        pass
    with claim(lock, "free again", timeout_s=0.3):
        pass


@pytest.mark.integration
def test_two_processes_on_one_partition_pay_once_and_store_once(tmp_path: Path, warehouse):
    archive = tmp_path / "a"
    write_archive(archive / "x.jsonl", [post_event(f"p{i}", text=f"post number {i}") for i in range(POSTS)])
    with warehouse.connect() as con:
        replace_day(con, DAY, "archive", stage_lines(con, read_outcomes(archive, DAY)))
        clean_day(con, DAY, FilterRules())
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    requests = tmp_path / "requests.log"
    checkpoint = Checkpoint(warehouse.staging_dir, "toxicity_scores", ["paid", "1"], DAY)

    def start(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(script), str(warehouse.db_path), str(requests), name, str(tmp_path)],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    first = start("first")
    while not (tmp_path / "first.paused").exists():
        assert first.poll() is None, first.communicate()[0]
        time.sleep(0.05)
    second = start("second")  # the first is mid-partition: two results checkpointed, ten to go
    outputs = wait_for_all([first, second])
    assert first.returncode == 0 and second.returncode == 0, outputs
    asked = requests.read_text().splitlines()
    uris = [line.split()[1] for line in asked]
    assert len(uris) == len(set(uris)) == POSTS, asked  # every post asked for once, by one of them
    assert f"second done 0 {POSTS}" in outputs[1], outputs[1]  # it waited, then found every post done
    with warehouse.connect() as con:
        stored = con.execute(
            "SELECT count(*), count(DISTINCT uri) FROM toxicity_scores WHERE scorer = 'paid'"
        ).fetchall()
    assert stored == [(POSTS, POSTS)]
    assert not checkpoint.path.exists()


EMBED_WORKER = textwrap.dedent(
    """
    import sys
    from datetime import date
    from bsky_warehouse.assets.topics import embed_day
    from bsky_warehouse.resources.warehouse import WarehouseResource

    print(sys.argv[2], embed_day(WarehouseResource(path=sys.argv[1]), date(2024, 3, 10), chunk_size=2), flush=True)
    """
)


@pytest.mark.integration
def test_two_processes_embedding_one_partition_store_each_post_once(tmp_path: Path, warehouse):
    """post_embeddings used to insert without deleting first: two overlapping runs doubled every row."""
    pytest.importorskip("sentence_transformers")
    archive = tmp_path / "a"
    write_archive(
        archive / "x.jsonl", [post_event(f"p{i}", text=f"post number {i} about trains") for i in range(POSTS)]
    )
    with warehouse.connect() as con:
        replace_day(con, DAY, "archive", stage_lines(con, read_outcomes(archive, DAY)))
        clean_day(con, DAY, FilterRules())
    script = tmp_path / "embed.py"
    script.write_text(EMBED_WORKER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(warehouse.db_path), name],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("first", "second")
    ]
    outputs = wait_for_all(procs)
    assert all(p.returncode == 0 for p in procs), outputs
    embedded = sorted(int(out.split("'embedded': ")[1].split(",")[0]) for out in outputs)
    assert embedded == [0, POSTS], outputs  # one run embedded the day; the other waited and found it done
    with warehouse.connect() as con:
        stored = con.execute("SELECT count(*), count(DISTINCT uri) FROM post_embeddings").fetchall()
    assert stored == [(POSTS, POSTS)]
