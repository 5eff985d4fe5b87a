"""The runs the schedule and the feed sensor ask for execute on the job's own executor, with config it takes."""

from __future__ import annotations

from datetime import UTC, datetime

from dagster._core.system_config.objects import ResolvedRunConfig

from bsky_warehouse.assets.feeds import feed_job, snapshot_request
from bsky_warehouse.assets.operations import yesterday_request
from bsky_warehouse.definitions import defs


def test_the_scheduled_and_sensor_runs_fork_their_steps_from_the_server():
    tick = datetime(2024, 3, 15, 2, 0, tzinfo=UTC)
    requests = [("warehouse_daily", yesterday_request(tick, "archive")), (feed_job.name, snapshot_request(tick))]
    for job_name, request in requests:
        job = defs.resolve_job_def(job_name)
        execution = ResolvedRunConfig.build(job, request.run_config).execution
        assert execution.execution_engine_name == "multiprocess", job_name
        assert "forkserver" in execution.execution_engine_config["start_method"], job_name
        assert "execution" not in request.run_config, "the executor takes no run config: it would be ignored"
    assert yesterday_request(tick, "archive").partition_key == "2024-03-14"
