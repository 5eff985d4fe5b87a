"""The rater page's HTTP side: a Starlette app over rater.core, served by uvicorn on 127.0.0.1 only.

Every request opens the warehouse for a moment under its lock and closes it again, so the page never holds
DuckDB's single writer slot: the daily job and the page take turns, and a rating waits (up to
`lock_timeout_s`) for a running job's write instead of failing. A rating is committed before its answer is
sent, so closing the browser or stopping the server loses nothing that was acknowledged.

Input that is not a rating (a value off the task's scale, a post the page could not have shown, a body that is
not JSON) is answered 4xx with a message for the page to show; only a failure of the warehouse or of a Dagster
run is a 5xx.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bsky_warehouse.audit import AuditError, load_audit
from bsky_warehouse.calibration import System
from bsky_warehouse.rater import core
from bsky_warehouse.resources.warehouse import WarehouseLockTimeout, WarehouseResource

STATIC_DIR = Path(__file__).with_name("static")
HOST = "127.0.0.1"


@dataclass
class RaterSettings:
    """One coder's session: who rates, which task, which system their audit is of, and where runs are recorded."""

    rater: str
    task: str
    topic_model_version: str
    warehouse: WarehouseResource
    system: str | None = None
    target: int = core.DEFAULT_TARGET
    top: int = 5
    examples: int = 3
    # A DagsterInstance for the audit's runs (the CLI's: DAGSTER_HOME's run history, else ephemeral).
    instance: Callable[[], Any] | None = None

    @property
    def frame(self) -> core.Frame:
        return core.Frame(self.rater, self.task, self.topic_model_version,
                          System.parse(self.system) if self.system else None)  # fmt: skip

    @property
    def audited(self) -> bool:
        return self.system is not None and self.task in core.AUDITED_TASKS


class RaterPage:
    """The page's operations, each one short connection to the warehouse."""

    def __init__(self, settings: RaterSettings) -> None:
        self.settings = settings
        self._refreshing = threading.Lock()

    def state(self, skip: list[str]) -> dict[str, Any]:
        """Progress, the scale and the next post to judge (None once every post of the frame is judged)."""
        s = self.settings
        with s.warehouse.read_only() as con:
            topics = core.topic_progress(con, s.frame, skip)
            judged = core.judged_count(con, s.rater, s.task)
            topic = core.next_topic(topics)
            uri = core.draw_post(con, s.frame, topic.topic_id, skip) if topic else None
            post = core.post_view(con, uri, topic) if uri else None
        return {
            "rater": s.rater,
            "task": s.task,
            "question": core.QUESTIONS[s.task],
            "system": s.system,
            "topic_model_version": s.topic_model_version,
            "scale": [asdict(c) for c in core.SCALES[s.task]],
            "skip_key": core.SKIP_KEY,
            "target": s.target,
            "n_judged": judged,
            "topics": [asdict(t) for t in topics],
            "post": post,
            "audit_ready": s.audited and judged >= s.target,
            "audit_note": None if s.audited else self._no_audit_reason(),
        }

    def _no_audit_reason(self) -> str:
        if self.settings.task not in core.AUDITED_TASKS:
            return f"the audit covers {' and '.join(core.AUDITED_TASKS)} judgements, not {self.settings.task}"
        return "start the page with --system scorer:<scorer> or labeler:<labeler>/<model> to see your audit"

    def rate(self, uri: Any, raw: Any) -> dict[str, Any]:
        """Validate and write one rating; the rating replaces the rater's earlier one of the post."""
        s = self.settings
        value, label = core.parse_rating(s.task, raw)
        if not isinstance(uri, str) or not uri:
            raise core.UnknownPost("say which post: `uri` is missing")
        row = core.judgement_row(uri, s.rater, s.task, value, label, datetime.now(UTC))
        with s.warehouse.connect() as con:
            if not core.in_frame(con, s.frame, uri):
                raise core.UnknownPost(f"{uri} is not a post this page shows (not in the warehouse, not eligible, "
                                       f"or without a topic under {s.topic_model_version})")  # fmt: skip
            replaced = core.write_judgement(con, row)
        return {"uri": uri, "value": value, "label": label, "replaced": replaced}

    def audit(self) -> dict[str, Any]:
        """The rater's audit as the marts hold it now, with their latest calibration."""
        s = self.settings
        if not s.audited:
            raise AuditError(self._no_audit_reason())
        with s.warehouse.read_only() as con:
            judged = core.judged_count(con, s.rater, s.task)
            if judged < s.target:
                raise AuditError(f"rate {s.target - judged} more posts to see your audit ({judged} of {s.target})")
            assert s.system is not None
            try:
                audit = load_audit(con, s.system, s.rater, s.task, s.topic_model_version, s.top, s.examples)
            except AuditError as err:
                raise AuditError(f"{err}. Press “refresh” to build your audit from your judgements.") from None
            calibration = core.latest_calibration(con, s.rater, s.task, s.system)
        return {**core.audit_view(audit, s.top), "calibration": calibration, "judged": judged}

    def refresh(self) -> dict[str, Any]:
        """Rebuild the audit marts (and, with enough judgements, the rater's calibration) as Dagster runs."""
        from bsky_warehouse.rater.runs import refresh_audit

        s = self.settings
        if not s.audited:
            raise AuditError(self._no_audit_reason())
        if not self._refreshing.acquire(blocking=False):
            raise RefreshBusy("a refresh is already running; the audit shows when it ends")
        try:
            runs = refresh_audit(s.warehouse, s.rater, s.task, s.system or "", s.instance)
        except WarehouseLockTimeout:
            raise
        except Exception as err:  # a run that cannot start or be summarized is a failed refresh, said as such
            raise RunFailed(f"{type(err).__name__}: {err}") from err
        finally:
            self._refreshing.release()
        failed = [run for run in runs if not run["success"] and run["job"] != "rater_calibration"]
        if failed:
            raise RunFailed("; ".join(f for run in failed for f in run["failures"]) or "the audit run failed")
        return {**self.audit(), "runs": runs}


class RefreshBusy(RuntimeError):
    pass


class RunFailed(RuntimeError):
    pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _guarded(call: Callable[[], dict[str, Any]]) -> JSONResponse:
    """Run a blocking operation off the event loop and turn the errors the page expects into answers."""
    try:
        return JSONResponse(await run_in_threadpool(call))
    except core.RatingError as err:
        return _error(422, str(err))
    except core.UnknownPost as err:
        return _error(404, str(err.args[0]))
    except AuditError as err:
        return _error(409, str(err))
    except RefreshBusy as err:
        return _error(409, str(err))
    except WarehouseLockTimeout as err:
        return _error(503, f"the warehouse is busy, nothing was saved; try again: {err}")
    except RunFailed as err:
        return _error(500, f"the audit run failed: {err}")


def create_app(settings: RaterSettings) -> Starlette:
    page = RaterPage(settings)

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def state(request: Request) -> JSONResponse:
        skip = request.query_params.getlist("skip")
        return await _guarded(lambda: page.state(skip))

    async def rate(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 'send the rating as JSON: {"uri": ..., "value": ...}')
        if not isinstance(body, dict) or "value" not in body:
            return _error(422, "a rating needs `uri` and `value`")
        skip = body.get("skip") if isinstance(body.get("skip"), list) else []
        skip = [u for u in skip if isinstance(u, str)]

        def rate_then_state() -> dict[str, Any]:
            saved = page.rate(body.get("uri"), body.get("value"))
            return {"saved": saved, **page.state(skip)}

        return await _guarded(rate_then_state)

    async def audit(request: Request) -> JSONResponse:
        return await _guarded(page.audit)

    async def refresh(request: Request) -> JSONResponse:
        return await _guarded(page.refresh)

    async def not_found(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/state", state),
            Route("/api/judgements", rate, methods=["POST"]),
            Route("/api/audit", audit),
            Route("/api/audit/refresh", refresh, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        exception_handlers={HTTPException: not_found},
    )


def serve(settings: RaterSettings, port: int) -> None:
    """Serve the page on 127.0.0.1 (never another interface: the page writes to the warehouse unauthenticated)."""
    import uvicorn

    print(f"rater page for {settings.rater} ({settings.task}): http://{HOST}:{port}/", flush=True)
    uvicorn.run(create_app(settings), host=HOST, port=port, log_level="warning")
