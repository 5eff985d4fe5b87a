"""A partition backfill of the daily job launched the way the Dagster UI launches it: the `launchPartitionBackfill`
GraphQL mutation sent over HTTP to a real `dagster-webserver`, carried out by a real `dagster-daemon`, as shipped
(no run config). It must succeed, build the marts and the report for every day, skip the unconfigured labeler
visibly, and its run must belong to the job in the UI (issue #19).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import DagsterInstance

from bsky_warehouse.project import REPO_ROOT
from tests.processes import interrupt_group

pytestmark = pytest.mark.integration
MODULE = "bsky_warehouse.definitions"
DAYS = ["2024-03-10", "2024-03-11", "2024-03-12"]
WAIT_S = 1500.0

REPOSITORIES = """
{ repositoriesOrError { ... on RepositoryConnection { nodes { name partitionSets { name } } } } }"""
LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""
BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs(limit: 50) { runId status jobName repositoryOrigin { repositoryName } } }
  }
}"""
JOB_RUNS = """
query JobRuns($job: String!) {
  runsOrError(filter: {pipelineName: $job}) { ... on Runs { results { runId status } } }
}"""
# The job's own Runs tab: the runs of that job in that code location (Dagster filters them by the run's
# repository label), not every run of any job of that name.
JOB_PAGE_RUNS = """
query JobPage($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) { ... on Pipeline { runs(limit: 50) { runId status } } }
}"""
# What the Overview timeline asks of a run: it places a run in its code location's row by the run's origin.
RUN_ORIGIN = """
query RunOrigin($ids: [String!]) {
  runsOrError(filter: {runIds: $ids}) {
    ... on Runs { results { runId status parentRunId repositoryOrigin { repositoryName repositoryLocationName } } }
  }
}"""
REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchPipelineReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""
MATERIALIZATION = """
query Mat($key: [String!]!, $partitions: [String!]) {
  assetNodes(assetKeys: [{path: $key}]) {
    assetMaterializations(partitions: $partitions) {
      partition metadataEntries { label ... on TextMetadataEntry { text } }
    }
  }
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer
    return answer["data"]


def wait_for(what: str, condition, procs: list[subprocess.Popen], logs: list[Path]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text()[-4000:]
                pytest.fail(f"{proc.args[:3]} exited ({proc.returncode}) waiting for {what}:\n{tail}")
        value = condition()
        if value:
            return value
        time.sleep(2)
    pytest.fail(f"no {what} within {WAIT_S:.0f} s; daemon log:\n{logs[-1].read_text()[-4000:]}")


def day_rows(db: Path, day: str) -> dict[str, int]:
    """Rows per table of the pipeline for one day."""
    tables = ["raw_posts", "cleaned_posts", "toxicity_scores"]
    con = duckdb.connect(str(db), read_only=True)
    try:
        sql = "SELECT count(*) FROM {} WHERE partition_date = ?"
        counts = {t: con.execute(sql.format(t), [day]).fetchone() for t in tables}
        return {t: row[0] for t, row in counts.items() if row}
    finally:
        con.close()


def test_a_backfill_launched_as_the_ui_does_builds_every_day(tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    # The instance's storage, created once as a deployment does: a webserver and a daemon starting together on a
    # new home both create its SQLite tables, and the loser dies on "table already exists" (seen on a busy run).
    DagsterInstance.from_config(str(home)).dispose()
    db = tmp_path / "wh.duckdb"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "VLLM_", "PERSPECTIVE_"))}
    env.update(DAGSTER_HOME=str(home), BSKY_WAREHOUSE_DB=str(db), BSKY_WAREHOUSE_REPORTS=str(tmp_path / "reports"))
    env.pop("BSKY_WAREHOUSE_START_DATE", None)
    port = free_port()
    url = f"http://127.0.0.1:{port}/graphql"
    webserver = [sys.executable, "-m", "dagster_webserver", "-m", MODULE, "-h", "127.0.0.1", "-p", str(port)]
    daemon = [sys.executable, "-m", "dagster._daemon", "run", "-m", MODULE]
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []

    def start(command: list[str], log: Path) -> None:
        with log.open("wb") as out:
            procs.append(subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))  # fmt: skip
        logs.append(log)

    try:
        start(webserver, tmp_path / "webserver.log")

        def code_location_loaded() -> bool:
            """The webserver answers before it has loaded the definitions: wait for the job's partition set."""
            try:
                repos = graphql(url, REPOSITORIES, {})["repositoriesOrError"].get("nodes", [])
            except (urllib.error.URLError, OSError):
                return False
            return any(p["name"] == "warehouse_daily_partition_set" for r in repos for p in r["partitionSets"])

        wait_for("webserver with the code location loaded", code_location_loaded, procs, logs)
        params = {
            "selector": {
                "partitionSetName": "warehouse_daily_partition_set",
                "repositorySelector": {"repositoryName": "__repository__", "repositoryLocationName": MODULE},
            },
            "partitionNames": DAYS,
        }
        launched = graphql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]
        # The daemon starts on a requested backfill, which its first look takes up; started with the webserver,
        # it would find the backfill only at its next look, up to 30 s later.
        start(daemon, tmp_path / "daemon.log")

        # A CLI run, typed in another folder with the same run history, shows on the job's page beside them. It
        # runs while the backfill does, as a user's would: its writes queue on the warehouse lock with the
        # backfill's.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        command = [sys.executable, "-m", "bsky_warehouse.cli", "materialize", "--start", "2024-03-13", "--json"]
        cli_out, cli_err = tmp_path / "cli.out", tmp_path / "cli.err"
        with cli_out.open("wb") as out, cli_err.open("wb") as err:
            cli = subprocess.Popen(command, cwd=elsewhere, env=env, stdout=out, stderr=err, start_new_session=True)

        def finished() -> dict[str, Any] | None:
            backfill = graphql(url, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
            done = backfill["status"] not in ("REQUESTED",) and all(
                r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in backfill["runs"]
            )
            return backfill if done and backfill["runs"] else None

        try:
            backfill = wait_for("finished backfill", finished, procs, logs)
            assert backfill["status"] == "COMPLETED_SUCCESS", (backfill, logs[-1].read_text()[-4000:])
            runs = backfill["runs"]
            assert runs and all(r["status"] == "SUCCESS" and r["jobName"] == "warehouse_daily" for r in runs)
            assert all(r["repositoryOrigin"] is not None for r in runs)  # the run belongs to the job's code location
            job_runs = graphql(url, JOB_RUNS, {"job": "warehouse_daily"})["runsOrError"]["results"]
            assert {r["runId"] for r in runs} <= {r["runId"] for r in job_runs}
            wait_for("CLI run", lambda: cli.poll() is not None, procs, logs)
        finally:
            interrupt_group(cli)
        assert cli.returncode == 0, cli_out.read_text()[-2000:] + cli_err.read_text()[-2000:]
        cli_run = json.loads(cli_out.read_text())["run_id"]
        cli_day_rows = day_rows(db, "2024-03-13")  # both runs done: nothing else writes until the re-execution
        selector = {"pipelineName": "warehouse_daily", "repositoryName": "__repository__",
                    "repositoryLocationName": MODULE}  # fmt: skip
        job_page = graphql(url, JOB_PAGE_RUNS, {"selector": selector})["pipelineOrError"]["runs"]
        assert {cli_run, *(r["runId"] for r in runs)} <= {r["runId"] for r in job_page}
        assert not list(elsewhere.iterdir()), "nothing is written where the command was typed"

        # The UI's "Re-execute" of that CLI run: launched by the daemon from the code location, the same steps.
        (cli_record,) = graphql(url, RUN_ORIGIN, {"ids": [cli_run]})["runsOrError"]["results"]
        assert cli_record["repositoryOrigin"] == {"repositoryName": "__repository__", "repositoryLocationName": MODULE}
        params = {"parentRunId": cli_run, "strategy": "ALL_STEPS"}
        relaunched = graphql(url, REEXECUTE, {"params": params})["launchPipelineReexecution"]
        assert relaunched["__typename"] == "LaunchRunSuccess", relaunched
        child = relaunched["run"]["runId"]

        def reexecuted() -> dict[str, Any] | None:
            (record,) = graphql(url, RUN_ORIGIN, {"ids": [child]})["runsOrError"]["results"]
            return record if record["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

        record = wait_for("re-executed CLI run", reexecuted, procs, logs)
        assert record["status"] == "SUCCESS", (record, logs[-1].read_text()[-4000:])
        assert record["parentRunId"] == cli_run
        instance = DagsterInstance.from_config(str(home))
        try:
            parent, rerun = (instance.get_run_by_id(run_id) for run_id in (cli_run, child))
        finally:
            instance.dispose()
        assert rerun.asset_selection == parent.asset_selection
        assert rerun.asset_check_selection == parent.asset_check_selection
        labels = graphql(url, MATERIALIZATION, {"key": ["llm_labels"], "partitions": DAYS})["assetNodes"][0]
        skipped = [e for m in labels["assetMaterializations"] for e in m["metadataEntries"] if e["label"] == "skipped"]
        assert skipped and all(e.get("text") for e in skipped)  # skipped, saying why, not a failed step
    finally:
        for proc in reversed(procs):
            interrupt_group(proc)

    con = duckdb.connect(str(db), read_only=True)
    try:
        counted = dict(con.execute("SELECT day::VARCHAR, raw_posts FROM marts.daily_post_counts").fetchall())
        raw = dict(con.execute("SELECT partition_date::VARCHAR, count(*) FROM raw_posts GROUP BY 1").fetchall())
        coverage = con.execute("SELECT count(*) FROM marts.pipeline_coverage WHERE unaccounted_posts <> 0").fetchall()
    finally:
        con.close()
    assert set(DAYS) <= set(counted) and all(counted[d] == raw.get(d, 0) for d in DAYS)
    assert day_rows(db, "2024-03-13") == cli_day_rows  # the re-execution rewrote the CLI's day, nothing doubled
    assert coverage == [(0,)]
    assert (tmp_path / "reports" / DAYS[-1] / "index.html").is_file()
