"""Unattended operation with a real `dagster-daemon`: the schedule and the feed sensors are turned on from the
shell as a user would, the daemon launches their runs against local Jetstream and AppView servers, the runs
succeed, a failed run lands in `pipeline_incidents`, and the daemon stops cleanly.

Every wait is bounded (a hang guard of many minutes, generous for a busy 2-core machine) and every server is
on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.definitions.run_request import InstigatorType

from bsky_warehouse.feeds import DEFAULT_FEEDS
from bsky_warehouse.project import REPO_ROOT
from bsky_warehouse.resources.warehouse import WarehouseResource
from tests.factories import post_event
from tests.processes import interrupt_group, wait_for_all
from tests.servers.appview_server import AppViewServer, feed_view_post
from tests.servers.jetstream_server import JetstreamServer

pytestmark = pytest.mark.integration
MODULE = ["-m", "bsky_warehouse.definitions"]
WAIT_S = 1500.0
TEXTS = [
    "the city council vote on the new transit budget is tomorrow",
    "my cat knocked the coffee off the desk again this morning",
    "senators argue about the border bill while the deadline nears",
    "finished the long run along the river, legs are gone",
    "new paper on coral reef recovery after the heat wave",
    "the election polls look close in every swing state",
    "baking sourdough for the first time, wish me luck",
    "this referee should never be allowed near a pitch again",
]


def jetstream_day(day: datetime) -> list[bytes]:
    """A recorded day of posts, then one event after midnight that tells the replay the day is over."""
    events = []
    for i in range(48):
        at = day + timedelta(minutes=30 * i + 1)
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        events.append(post_event(f"3kday{i:06d}", text=f"{TEXTS[i % len(TEXTS)]} ({i})", created_at=stamp,
                                 did=f"did:plc:author{i % 5}"))  # fmt: skip
    after = (day + timedelta(days=1, minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    events.append(post_event("3knextday00", text="already tomorrow", created_at=after))
    return [json.dumps(e).encode() for e in events]


def wait_for(what: str, condition: Callable[[], Any], daemon: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if daemon.poll() is not None:
            pytest.fail(f"the daemon exited ({daemon.returncode}) while waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(2)
    pytest.fail(f"no {what} within {WAIT_S:.0f} s; daemon log:\n{log.read_text()[-4000:]}")


def runs_of(home: Path, job: str) -> list[Any]:
    instance = DagsterInstance.from_config(str(home))
    try:
        return list(instance.get_runs(RunsFilter(job_name=job)))
    finally:
        instance.dispose()


def runs_with(home: Path, job: str, status: DagsterRunStatus) -> Callable[[], list[Any]]:
    """A condition for `wait_for`: the job's runs in that status."""
    return lambda: [r for r in runs_of(home, job) if r.status == status]


def sensor_cursor(home: Path, sensor: str) -> Callable[[], bool]:
    """A condition for `wait_for`: the daemon has evaluated the sensor and stored its cursor."""

    def evaluated() -> bool:
        instance = DagsterInstance.from_config(str(home))
        try:
            states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        finally:
            instance.dispose()
        return any(s.instigator_name == sensor and s.instigator_data and s.instigator_data.cursor for s in states)

    return evaluated


def incidents(db: str) -> list[tuple]:
    """Read through the warehouse lock, as every other process does (a bare open would block their writes)."""
    if not Path(db).exists():
        return []
    with WarehouseResource(path=db).read_only() as con:
        try:
            return con.execute("SELECT run_id, job_name, step_key, error FROM pipeline_incidents").fetchall()
        except duckdb.CatalogException:
            return []


def one_tick_cron(after: datetime) -> str:
    """A cron that fires once in the test: the first whole minute at least a minute after `after` (the scheduler
    catches up a tick that passed between turning the schedule on and the daemon's first look)."""
    at = after + timedelta(minutes=2)
    return f"{at.minute} {at.hour} * * *"


def test_the_daemon_runs_the_schedule_and_sensors_and_records_a_failure(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    DagsterInstance.from_config(str(home)).dispose()  # the instance's storage, created once as a deployment does
    db = str(tmp_path / "wh.duckdb")
    now = datetime.now(UTC)
    yesterday = datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=1)
    feed_items = [feed_view_post(n, text=TEXTS[n % len(TEXTS)], created_at=yesterday.strftime("%Y-%m-%dT08:%M:00.000Z"))
                  for n in range(30)]  # fmt: skip
    with (
        JetstreamServer(jetstream_day(yesterday)) as jetstream,
        AppViewServer(feeds={feed: feed_items for feed in DEFAULT_FEEDS}) as appview,
    ):
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "BSKY_WAREHOUSE_DB": db,
            "BSKY_WAREHOUSE_REPORTS": str(tmp_path / "reports"),
            "BSKY_JETSTREAM_HOST": f"ws://{jetstream.host}",
            "BSKY_APPVIEW_URL": appview.url,
            "BSKY_WAREHOUSE_DAILY_SOURCE": "jetstream",
            # Late in the UTC day yesterday's start is over 36 h old; the local server keeps everything.
            "BSKY_JETSTREAM_RETENTION_HOURS": "72",
            "BSKY_WAREHOUSE_SCHEDULE_CRON": one_tick_cron(datetime.now(UTC)),
        }
        # Turned on from the shell, each command in its own terminal; the daemon starts beside them and takes
        # each up at its next look (every command imports the code location, about 10 s apiece).
        turned_on = [
            subprocess.Popen([sys.executable, "-m", "dagster", kind, "start", name, *MODULE], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for kind, name in (("schedule", "warehouse_yesterday_schedule"), ("sensor", "feed_snapshot_sensor"),
                               ("sensor", "feed_followup_sensor"))
        ]  # fmt: skip
        log = tmp_path / "daemon.log"
        with log.open("wb") as out:
            command = [sys.executable, "-m", "dagster._daemon", "run", *MODULE]
            daemon = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)  # fmt: skip
        try:
            for started, output in zip(turned_on, wait_for_all(turned_on), strict=True):
                assert started.returncode == 0, output
            feed_run = wait_for(
                "successful feed snapshot run",
                runs_with(home, "feed_snapshots_job", DagsterRunStatus.SUCCESS),
                daemon,
                log,
            )
            # A forced failure: a snapshot of a feed the AppView does not serve, launched through the daemon's
            # queue while the follow-up and the scheduled runs go on. After the successful snapshot, which would
            # close its incident; once the failure sensor has looked, since its first look only notes where the
            # run history stands and records nothing older.
            wait_for("failure sensor watching", sensor_cursor(home, "record_failed_runs"), daemon, log)
            today = now.date().isoformat()
            bad = {"ops": {"feed_snapshots": {"config": {"feeds": ["at://did:plc:nobody/app.bsky.feed.generator/x"]}}}}
            launched = subprocess.run(
                [sys.executable, "-m", "dagster", "job", "launch", "-j", "feed_snapshots_job", *MODULE,
                 "--config-json", json.dumps(bad), "--tags", json.dumps({"dagster/partition": today})],
                cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert launched.returncode == 0, launched.stdout + launched.stderr
            daily_run = wait_for(
                "successful scheduled run",
                runs_with(home, "warehouse_yesterday", DagsterRunStatus.SUCCESS),
                daemon,
                log,
            )
            followup = wait_for(
                "successful follow-up run", runs_with(home, "feed_followup", DagsterRunStatus.SUCCESS), daemon, log
            )
            failed = wait_for(
                "failed run", runs_with(home, "feed_snapshots_job", DagsterRunStatus.FAILURE), daemon, log
            )
            recorded = wait_for(
                "recorded incident", lambda: [row for row in incidents(db) if row[0] == failed[0].run_id], daemon, log
            )
        finally:
            if not interrupt_group(daemon):
                pytest.fail(f"the daemon did not stop on SIGINT:\n{log.read_text()[-4000:]}")

    assert feed_run and daily_run and followup
    assert daily_run[0].tags["dagster/partition"] == yesterday.date().isoformat()
    assert recorded[0][1] == "feed_snapshots_job" and recorded[0][2] == "feed_snapshots"
    assert "UnknownFeed" in recorded[0][3] or "could not find feed" in recorded[0][3]
    con = duckdb.connect(db, read_only=True)
    try:
        by_source = dict(con.execute("SELECT source, count(*) FROM raw_posts GROUP BY 1").fetchall())
        cleaned = con.execute("SELECT count(*) FROM cleaned_posts WHERE partition_date = $d",
                              {"d": yesterday.date()}).fetchall()[0][0]  # fmt: skip
        counted = con.execute("SELECT raw_posts FROM marts.daily_post_counts WHERE day = $d",
                              {"d": yesterday.date()}).fetchall()  # fmt: skip
    finally:
        con.close()
    assert by_source["jetstream"] == 48 and by_source["feed"] == 30
    assert cleaned == 48 + 30
    assert counted and counted[0][0] >= 48
