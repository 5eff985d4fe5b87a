"""`bsky-warehouse`: the small command line over the warehouse (demo, check, docs, eval, …)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bsky_warehouse import settings
from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.project import (
    DBT_MANIFEST,
    DBT_PROJECT_DIR,
    DOCS_TARGET,
    REFERENCE_DIR,
    REPO_ROOT,
    SAMPLE_DIR,
    dbt_executable,
    prepare_manifest,
)
from bsky_warehouse.reference import REFERENCE_SCORER

if TYPE_CHECKING:
    from bsky_warehouse.assets.dbt import AuditWhatIf

SAMPLE_WINDOW = DayWindow(date(2024, 3, 8), date(2024, 3, 20))
INGEST_ASSETS = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts"]


def dbt_fed_by(*tables: str) -> list[str]:
    """The daily dbt models that read these Python tables, with the dbt models those read: taken from the asset
    graph, so a model added to the project is never left out of the step whose new rows it reads."""
    from dagster import AssetSelection

    from bsky_warehouse.assets.dbt import dbt_models
    from bsky_warehouse.definitions import defs

    daily_dbt = AssetSelection.assets(dbt_models)
    selection = (AssetSelection.assets(*tables).downstream() & daily_dbt).upstream() & daily_dbt
    return sorted(key.to_user_string() for key in selection.resolve(defs.resolve_asset_graph()))


def whole_history_marts() -> list[str]:
    """Every global mart (dbt tag `global`, the unpartitioned asset dbt_global_models) with the dbt models it
    reads: added to a run, they are built once, as its last step, over every day the warehouse holds."""
    from dagster import AssetSelection

    from bsky_warehouse.assets.dbt import dbt_global_models, dbt_models
    from bsky_warehouse.definitions import defs

    dbt = AssetSelection.assets(dbt_models, dbt_global_models)
    selection = AssetSelection.assets(dbt_global_models).upstream() & dbt
    return sorted(key.to_user_string() for key in selection.resolve(defs.resolve_asset_graph()))


def dbt_asset_names() -> set[str]:
    """Every asset the dbt project defines (daily, global and author models, seeds): one line in a run summary."""
    from bsky_warehouse.assets.dbt import dbt_author_models, dbt_global_models, dbt_models

    return {key.to_user_string() for a in (dbt_models, dbt_global_models, dbt_author_models) for key in a.keys}


# The scorer a toxicity rater is audited against unless `rate --system` names another: the offline default.
DEFAULT_RATE_SCORER = "profanity-check"

# The 2024 pilot's hand labels, imported as one rater's judgements.
REFERENCE_RATER = "bluesky-research-2024"
REFERENCE_JUDGEMENT_TASKS = ("sociopolitical", "ideology")


def recorded_labels_config(model: str) -> dict[str, Any]:
    """Run config importing one recorded 2024 labeler (GPT-4, Llama-3-8B, Llama-3-70B) into llm_labels."""
    from bsky_warehouse.reference_labels import RECORDED_LABELS, RECORDED_MODELS, RECORDED_PROMPT_VERSION

    label_column, ideology_column = RECORDED_MODELS[model]
    return {"ops": {"llm_labels": {"config": {
        "labeler": "import", "import_path": str(RECORDED_LABELS), "import_model": model,
        "import_prompt_version": RECORDED_PROMPT_VERSION, "import_label_column": label_column,
        "import_ideology_column": ideology_column, "import_drop_ideology_on_non_sociopolitical": True,
    }}}}  # fmt: skip


def _instance():
    """The run history every CLI run is recorded in (DAGSTER_HOME, by default the checkout's `.dagster_home`).

    A first use creates it: the project's instance settings (the duckdb pool, no telemetry), as `make` copies
    them, and Dagster's storage, under a lock, so two commands started at once on a fresh checkout do not race
    on creating the same SQLite schema."""
    from dagster import DagsterInstance

    from bsky_warehouse.resources.warehouse import file_lock

    home = settings.DAGSTER_HOME.get()

    def busy() -> Exception:
        return RuntimeError(f"another process has been creating the run history in {home} for 10 minutes")

    with file_lock(home / ".create.lock", timeout_s=600, busy=busy):
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text((REPO_ROOT / "dagster.yaml").read_text(), encoding="utf-8")
        return DagsterInstance.from_config(str(home))


@contextlib.contextmanager
def logs_to_stderr() -> Iterator[None]:
    """dbt, run inside a Dagster step, writes its log to file descriptor 1; a command whose stdout is its answer
    (`--json`) sends that log to stderr, where diagnostics belong."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run_log_path() -> Path:
    """Where a CLI run's dbt log goes: beside the warehouse, one file per run, so the terminal keeps the summary."""
    db = settings.WAREHOUSE_DB.get().expanduser().resolve()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return db.with_name(db.name + ".logs") / f"materialize-{stamp}.log"


@contextlib.contextmanager
def logs_to_file(path: Path) -> Iterator[None]:
    """dbt's log, which dagster-dbt echoes to stdout, into a file (Dagster's own warnings still reach stderr)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        yield


def _warehouse():
    from bsky_warehouse.resources.warehouse import WarehouseResource

    return WarehouseResource()


def import_reference_judgements() -> list[dict[str, Any]]:
    """The pilot's hand labels (sociopolitical and ideology) as judgements of rater bluesky-research-2024."""
    from bsky_warehouse.judgements import load_judgements, parse_judgements
    from bsky_warehouse.reference_labels import reference_handle_to_did

    path = REFERENCE_DIR / "pilot_posts_hand_labels.csv"
    parsed = [parse_judgements(path, REFERENCE_RATER, task, handle_to_did=reference_handle_to_did())
              for task in REFERENCE_JUDGEMENT_TASKS]  # fmt: skip
    with _warehouse().connect() as con:
        return [load_judgements(con, p) for p in parsed]


def demo_runs(
    window: DayWindow, archive_dir: str, raise_on_error: bool = True, log_level: str = "WARNING"
) -> list[dict[str, Any]]:
    """The demo: ingest, clean and the offline default scorer; then the 2024 reference Perspective scores; then
    the recorded GPT-4 and Llama-3 labels (or, with LLM_MODEL set, the configured OpenAI-compatible server);
    then the audit: the pilot's hand labels as judgements, embeddings and topics, the audit marts; the
    distilled Perspective scorer fitted on the 2024 reference scores and scoring every eligible post, then
    bridged onto their scale (`scorer_mappings`, `scorer_bridge`); each recorded labeler calibrated to the
    hand labels, and the report of the last day."""
    from bsky_warehouse.distill import SCORER_NAME
    from bsky_warehouse.pipeline import run_calibration_job, run_job, run_window
    from bsky_warehouse.reference_labels import RECORDED_MODELS

    def run(assets: list[str], run_config: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        return run_window(window, instance, assets=assets, run_config=run_config, raise_on_error=raise_on_error,
                          log_level=log_level, **kwargs)  # fmt: skip

    instance = _instance()
    runs = [
        run(
            [*INGEST_ASSETS, "toxicity_scores", "daily_post_counts", *dbt_fed_by("toxicity_scores")],
            archive_dir=archive_dir,
        )
    ]
    runs.append(
        run(
            ["toxicity_scores", *dbt_fed_by("toxicity_scores")],
            {"ops": {"toxicity_scores": {"config": {"scorer": REFERENCE_SCORER}}}},
        )
    )
    label_runs = (
        [{"ops": {"llm_labels": {"config": {"labeler": "openai"}}}}]
        if settings.LLM_MODEL.get()
        else [recorded_labels_config(model) for model in RECORDED_MODELS]
    )
    runs.extend(run(["llm_labels", *dbt_fed_by("llm_labels")], run_config) for run_config in label_runs)
    import_reference_judgements()
    runs.append(run(["post_embeddings", "post_topics", *dbt_fed_by("human_judgements", "post_topics")]))
    distill_config = {"ops": {"distilled_models": {"config": {"training_scorers": [REFERENCE_SCORER]}}}}
    runs.append(run_job("distill_perspective", instance, run_config=distill_config, raise_on_error=raise_on_error,
                        log_level=log_level))  # fmt: skip
    distilled_scores = {"ops": {"toxicity_scores": {"config": {"scorer": SCORER_NAME}}}}
    # The last run of daily data also builds the whole-history marts, once, over everything loaded above.
    runs.append(run(["toxicity_scores", *dbt_fed_by("toxicity_scores"), *whole_history_marts()], distilled_scores))
    # The bridge: the distilled scorer mapped onto the reference scores' scale (on the sample every post has
    # one), then its whole-history mart rebuilt with that mapping.
    runs.append(run_job("bridge_scorers", instance, raise_on_error=raise_on_error, log_level=log_level))
    runs.append(run(["scorer_bridge"]))
    labelers = [f"labeler:openai/{settings.LLM_MODEL.get()}"] if settings.LLM_MODEL.get() else [
        f"labeler:import/{model}" for model in RECORDED_MODELS]  # fmt: skip
    for system in labelers:
        config = {"rater": REFERENCE_RATER, "task": "sociopolitical", "system": system, "use_embeddings": True}
        runs.append(run_calibration_job(config, instance, raise_on_error=raise_on_error, log_level=log_level))
    last_day = window.days()[-1]
    runs.append(run_window(DayWindow.for_day(last_day), instance, assets=["daily_report"],
                           raise_on_error=raise_on_error, log_level=log_level))  # fmt: skip
    return runs


def warehouse_summary() -> dict[str, Any]:
    with _warehouse().connect() as con:
        counts = {
            table: con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            for table in ("raw_posts", "rejected_records", "post_deletions", "cleaned_posts", "toxicity_scores",
                          "llm_labels")
        }  # fmt: skip
        scorers = dict(con.execute("SELECT scorer, count(*) FROM toxicity_scores GROUP BY 1 ORDER BY 1").fetchall())
        labelers = {
            f"{labeler}/{model}/{version}": n
            for labeler, model, version, n in con.execute(
                "SELECT labeler, model, prompt_version, count(*) FROM llm_labels GROUP BY ALL ORDER BY ALL"
            ).fetchall()
        }
        days = con.execute("SELECT count(DISTINCT partition_date) FROM raw_posts").fetchall()[0][0]
        judgements = {f"{rater}/{task}": n for rater, task, n in con.execute(
            "SELECT rater, task, count(*) FROM human_judgements GROUP BY ALL ORDER BY ALL").fetchall()}  # fmt: skip
        topics = {version: {"topics": n, "posts": posts} for version, n, posts in con.execute(
            """SELECT m.topic_model_version, count(DISTINCT m.topic_id),
                      (SELECT count(*) FROM post_topics t WHERE t.topic_model_version = m.topic_model_version)
               FROM topic_models m GROUP BY 1 ORDER BY 1""").fetchall()}  # fmt: skip
        calibrations = [dict(zip(("rater", "task", "system", "features", "cv_error_system", "cv_error_calibrated"),
                                 (*row[:4], round(row[4], 4), round(row[5], 4)), strict=True))
                        for row in con.execute(
            """SELECT rater, task, system, features, cv_error_system, cv_error_calibrated FROM rater_calibrations
               ORDER BY ALL""").fetchall()]  # fmt: skip
        distilled: dict[str, dict[str, Any]] = {}
        for version, attribute, n, rho in con.execute(
            "SELECT model_version, attribute, n_train, round(cv_spearman, 3) FROM distilled_models ORDER BY ALL"
        ).fetchall():
            distilled.setdefault(version, {})[attribute.removeprefix("prob_")] = {"n": n, "cv_spearman": rho}
    return {"tables": counts, "days_with_posts": days, "toxicity_rows_by_scorer": scorers,
            "label_rows_by_labeler": labelers, "judgements_by_rater_task": judgements, "topic_models": topics,
            "calibrations": calibrations, "distilled_models": distilled}  # fmt: skip


def cmd_prepare(_: argparse.Namespace) -> int:
    print(f"dbt manifest: {prepare_manifest()}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bsky_warehouse.report import reports_root

    prepare_manifest()
    window = DayWindow(date.fromisoformat(args.start), date.fromisoformat(args.end))
    runs = demo_runs(window, args.archive)
    summary = {"runs": [{k: r[k] for k in ("run_id", "success", "assets_materialized")} for r in runs]}
    summary["warehouse"] = warehouse_summary()
    print(json.dumps(summary, indent=2, default=str))
    print(
        "\nNext: `make ui` (Dagster UI, http://127.0.0.1:3000), `make docs` (dbt docs, http://127.0.0.1:8080), "
        "`.venv/bin/bsky-warehouse eval scorers --json`, "
        f"`.venv/bin/bsky-warehouse audit --system labeler:import/llama-3-8b --rater {REFERENCE_RATER} "
        f"--task sociopolitical`; the report: {reports_root() / runs[-1]['window'][0] / 'index.html'}"
    )
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:

    from bsky_warehouse.partitions import partition_start_date
    from bsky_warehouse.preflight import materialize_problems

    problems = materialize_problems(
        start=args.start, end=args.end, archive=args.archive, scorer=args.scorer, labeler=args.labeler,
        env=settings.environment(), first_day=partition_start_date(), today=datetime.now(UTC).date(),
        sample=args.sample,
    )  # fmt: skip
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    from bsky_warehouse.pipeline import run_window
    from bsky_warehouse.run_summary import asset_counts, format_counts

    prepare_manifest()
    start = date.fromisoformat(args.start)
    end = date.fromisoformat(args.end) if args.end else start + timedelta(days=1)
    ops: dict[str, Any] = {}
    if args.scorer:
        ops["toxicity_scores"] = {"config": {"scorer": args.scorer, "sample": args.sample}}
    assets = [*INGEST_ASSETS, "toxicity_scores", "daily_post_counts", *dbt_fed_by("toxicity_scores")]
    if args.labeler:
        ops["llm_labels"] = {"config": {"labeler": args.labeler}}
        assets += ["llm_labels", *dbt_fed_by("llm_labels")]
    assets += whole_history_marts()
    log_path = run_log_path()
    with logs_to_stderr() if args.json else logs_to_file(log_path):
        result = run_window(DayWindow(start, end), _instance(), archive_dir=args.archive, run_config={"ops": ops},
                            assets=list(dict.fromkeys(assets)), log_level="WARNING")  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0 if result["success"] else 1
    days = (end - start).days
    print(f"{'succeeded' if result['success'] else 'FAILED'}: {start} .. {end - timedelta(days=1)} "
          f"({days} day{'s' if days != 1 else ''}), run {result['run_id']}")  # fmt: skip
    dbt_models = dbt_asset_names()
    counts = [c for c in asset_counts(result["materializations"]) if c.asset not in dbt_models]
    built = {a for a, _ in result["materializations"]} & dbt_models
    for line in format_counts(counts, dbt_models=built, checks=result["checks"]):
        print(line)
    for failure in result["failures"]:
        print(f"failed step: {failure}")
    where = _warehouse().location
    print(f"warehouse: {where}; dbt log: {log_path}; details: this run in the Dagster UI (make ui), or --json")
    return 0 if result["success"] else 1


def format_check_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table of check results, failures first."""
    rows = sorted(rows, key=lambda r: (r["passed"], r["asset"], r["check"]))
    width_a = max([len("asset"), *(len(r["asset"]) for r in rows)])
    width_c = max([len("check"), *(len(r["check"]) for r in rows)])
    lines = [f"{'asset':<{width_a}}  {'check':<{width_c}}  result"]
    for r in rows:
        verdict = "PASS" if r["passed"] else f"FAIL ({r['severity']})"
        lines.append(f"{r['asset']:<{width_a}}  {r['check']:<{width_c}}  {verdict}")
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    prepare_manifest()
    runs = demo_runs(SAMPLE_WINDOW, args.archive, raise_on_error=False)
    rows = [check for run in runs for check in run["checks"]]
    print(format_check_table(rows))
    failed = [r for r in rows if not r["passed"]]
    broken_runs = [r["run_id"] for r in runs if not r["success"]]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    if broken_runs:
        print(f"runs that did not succeed: {broken_runs}")
    return 1 if failed or broken_runs or not rows else 0


def cmd_docs(args: argparse.Namespace) -> int:
    """Generate the dbt docs site into its own target dir (DOCS_TARGET): `docs generate` rewrites the manifest of
    the dir it writes to, and the project's own manifest is what every Dagster process loads, so a process starting
    meanwhile must never read it half-written."""
    import shutil

    prepare_manifest()
    env = _warehouse().dbt_env()
    DOCS_TARGET.mkdir(parents=True, exist_ok=True)
    parsed = DBT_MANIFEST.with_name("partial_parse.msgpack")
    if parsed.exists():  # start from the project's parse: only the catalog is new work
        shutil.copyfile(parsed, DOCS_TARGET / parsed.name)
    target = ["--target-path", str(DOCS_TARGET)]
    with _warehouse().lock():
        subprocess.run(
            [dbt_executable(), "docs", "generate", "--project-dir", str(DBT_PROJECT_DIR),
             "--profiles-dir", str(DBT_PROJECT_DIR), *target],
            check=True, env=env, cwd=DBT_PROJECT_DIR,
        )  # fmt: skip
    print(f"dbt docs site: {DOCS_TARGET / 'index.html'}")
    if not args.serve:
        return 0
    print(f"dbt docs on http://{args.host}:{args.port}")
    return subprocess.call(
        [dbt_executable(), "docs", "serve", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir",
         str(DBT_PROJECT_DIR), "--host", args.host, "--port", str(args.port), "--no-browser", *target],
        env=env, cwd=DBT_PROJECT_DIR,
    )  # fmt: skip


def cmd_eval_scorers(args: argparse.Namespace) -> int:
    from bsky_warehouse.evaluation import scorer_agreement, with_scorer_intervals
    from bsky_warehouse.metrics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

    with _warehouse().read_only() as con:
        rows = rounded(with_scorer_intervals(con, scorer_agreement(con, reference=args.reference)))
    if args.json:
        print(json.dumps({"scorers": rows, "intervals": {
            "pearson, spearman, auc": "percentile bootstrap 95%", "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
            "bootstrap_seed": BOOTSTRAP_SEED}}))  # fmt: skip
    else:
        for r in rows:
            print(f"{r['scorer']:>24} vs {r['reference']}: {r['attribute']:<18} n={r['n']:<5} "
                  f"pearson={r['pearson']} {r['pearson_ci']} spearman={r['spearman']} {r['spearman_ci']} "
                  f"auc={r['auc']} {r['auc_ci']} "
                  f"({r['evaluated_on']}, {r['n_out_of_fold']} out of fold)")  # fmt: skip
    return 0


def rounded(value: Any, places: int = 3) -> Any:
    """`eval` output to 3 decimals (floats inside lists and dicts too): more digits than a few hundred posts
    can support would read as precision the figures do not have. A p-value keeps 3 significant digits
    instead, since 1e-9 rounded to 0.0 would claim certainty."""
    if isinstance(value, float):
        return round(value, places)
    if isinstance(value, dict):
        return {k: float(f"{v:.3g}") if k == "p_value" and isinstance(v, float) else rounded(v, places)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list | tuple):
        return [rounded(v, places) for v in value]
    return value


def cmd_eval_labels(args: argparse.Namespace) -> int:
    from bsky_warehouse.evaluation import labeler_agreement
    from bsky_warehouse.metrics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

    with _warehouse().read_only() as con:
        rows = rounded(labeler_agreement(con))
    if args.json:
        print(json.dumps({"labelers": rows, "intervals": {
            "accuracy": "wilson 95%", "macro_f1": "percentile bootstrap 95%",
            "bootstrap_resamples": BOOTSTRAP_RESAMPLES, "bootstrap_seed": BOOTSTRAP_SEED}}))  # fmt: skip
    else:
        for r in rows:
            print(f"{r['labeler']}/{r['model']:<14} {r['task']:<29} n={r['n']:<4} "
                  f"accuracy={r['accuracy']} [{r['accuracy_ci_low']}, {r['accuracy_ci_high']}] "
                  f"macro_f1={r['macro_f1']} [{r['macro_f1_ci_low']}, {r['macro_f1_ci_high']}]")  # fmt: skip
    return 0


def cmd_eval_compare(args: argparse.Namespace) -> int:
    """Two systems on the same posts: labelers (`labeler/model`) on a labeler task with McNemar's exact test,
    scorers (`scorer:name` or a bare name) on an attribute with a paired bootstrap of their Spearman."""
    from bsky_warehouse.evaluation import LABELER_TASKS, compare_labelers, compare_scorers

    with _warehouse().read_only() as con:
        try:
            if args.task in LABELER_TASKS:
                result = compare_labelers(con, args.a, args.b, args.task)
            else:
                result = compare_scorers(con, args.a, args.b, args.task, reference=args.reference)
        except ValueError as exc:
            print(f"eval compare: {exc}", file=sys.stderr)
            return 2
    result = rounded(result)
    if args.json:
        print(json.dumps(result))
    elif result["test"] == "mcnemar_exact":
        print(f"{result['task']}: {result['a']} {result['accuracy_a']} {result['accuracy_a_ci']} vs {result['b']} "
              f"{result['accuracy_b']} {result['accuracy_b_ci']} on n={result['n']} posts both answered; "
              f"difference {result['difference']} ({result['a_only_correct']} only A right, "
              f"{result['b_only_correct']} only B right), McNemar exact p={result['p_value']}")  # fmt: skip
    else:
        print(f"{result['attribute']} vs {result['reference']}: {result['a']} spearman {result['spearman_a']} vs "
              f"{result['b']} {result['spearman_b']} on n={result['n']}; difference {result['difference']} "
              f"{result['difference_ci']} (paired bootstrap, {result['resamples']} resamples), "
              f"p={result['p_value']}")  # fmt: skip
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit one rater's calibration of a system as a Dagster run; print its cross-validated error beside the
    system's."""
    from dagster import AssetKey

    from bsky_warehouse.calibration import CalibrationError, System, check_task
    from bsky_warehouse.pipeline import run_calibration_job

    try:
        check_task(args.task, System.parse(args.system))
    except CalibrationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    prepare_manifest()
    config = {"rater": args.rater, "task": args.task, "system": args.system, "use_embeddings": args.embeddings,
              "embedding_model": args.embedding_model}  # fmt: skip
    instance = _instance()
    result = run_calibration_job(config, instance, raise_on_error=False, log_level="ERROR")
    if not result["success"]:
        print(f"error: {'; '.join(result['failures']) or 'the rater_calibration run failed'}", file=sys.stderr)
        return 2
    event = instance.get_latest_materialization_event(AssetKey("rater_calibrations"))
    if event is None or event.run_id != result["run_id"] or event.asset_materialization is None:
        print(f"error: run {result['run_id']} recorded no rater_calibrations materialization", file=sys.stderr)
        return 1
    summary = event.asset_materialization.metadata["summary"].value
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{summary['rater']} / {summary['task']} / {summary['system']}: {summary['n_judgements']} judgements, "
          f"{summary['folds']}-fold cross-validated {summary['metric']} (lower is better)")  # fmt: skip
    for fit in summary["fits"]:
        print(f"  {fit['features']:<18} system alone {fit['cv_error_system']:.4f}  calibrated "
              f"{fit['cv_error_calibrated']:.4f}  constant baseline {fit['cv_error_baseline']:.4f}  "
              f"model {fit['model_version']}{'  (projected)' if fit['projected'] else ''}")  # fmt: skip
    print(f"projected over {summary['projected_posts']} posts: {summary['flagged_posts']} flagged "
          f"(prediction >= {summary['flag_threshold']}); table calibrated_predictions, "
          f"model_version {summary['model_version']}")  # fmt: skip
    return 0


def cmd_import_judgements(args: argparse.Namespace) -> int:
    """Load one rater's judgements of one task from a CSV/Parquet file; bad rows are rejected with reasons."""
    from bsky_warehouse.judgements import JudgementFileError, load_judgements, parse_judgements, rejection_lines
    from bsky_warehouse.reference_labels import handle_map_from_csv, reference_handle_to_did

    try:
        handles = handle_map_from_csv(args.handle_map) if args.handle_map else reference_handle_to_did()
        parsed = parse_judgements(args.file, args.rater, args.task, uri_column=args.uri_column,
                                  value_column=args.value_column, handle_to_did=handles)  # fmt: skip
    except (JudgementFileError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with _warehouse().connect() as con:
        summary = load_judgements(con, parsed)
    if args.json:
        print(json.dumps({**summary, "first_rejections": rejection_lines(parsed)}))
        return 0
    print(f"{summary['loaded']} of {summary['records']} {args.task} judgements by {args.rater} loaded from "
          f"{summary['file']} (posts: column {summary['uri_column']}, values: {summary['value_column']})")  # fmt: skip
    if summary["rejected"]:
        print(f"{summary['rejected']} rejected {summary['rejected_by_reason']}; in table rejected_records:")
        for line in rejection_lines(parsed):
            print(f"  {line}")
    return 0


def rebuild_audit(system: str, threshold: float) -> AuditWhatIf:
    """Build the audit models with `system` flagging at `threshold` into their own what-if tables
    (marts.<model>__whatif_<system>_<threshold>); the shared audit marts keep the configured thresholds, so
    neither does the what-if leak into them nor does the next build revert the what-if."""
    from bsky_warehouse.assets.dbt import AuditWhatIf, build_audit_whatif

    whatif = AuditWhatIf(system, threshold)
    build_audit_whatif(_warehouse(), whatif)
    return whatif


def cmd_audit(args: argparse.Namespace) -> int:
    """Print the topics where a system disagrees most with a rater, with example posts; write the report."""
    from bsky_warehouse.audit import (
        AUDIT_MARTS,
        OVER,
        UNDER,
        AuditError,
        audit_summary,
        load_audit,
        render_markdown,
        report_path,
    )
    from bsky_warehouse.audit import worst_topics as worst
    from bsky_warehouse.report import reports_root

    whatif: AuditWhatIf | None = None
    if args.threshold is not None:
        if not 0 <= args.threshold <= 1:
            print(f"error: --threshold must be in [0, 1], got {args.threshold}", file=sys.stderr)
            return 2
        prepare_manifest()
        try:
            whatif = rebuild_audit(args.system, args.threshold)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    try:
        relations = {model: whatif.relation(model) for model in AUDIT_MARTS} if whatif else None
        with _warehouse().read_only() as con:
            audit = load_audit(con, args.system, args.rater, args.task, args.topic_model, args.top, args.examples,
                               relations=relations)  # fmt: skip
    except AuditError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = Path(args.out) if args.out else report_path(reports_root(), args.system, args.rater, args.task)
    if whatif and not args.out:
        path = path.with_name(f"{path.stem}__{whatif.suffix}{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(audit, args.top), encoding="utf-8")
    if args.json:
        print(json.dumps({**audit_summary(audit, args.top), "report": str(path)}, default=str))
        return 0
    print(f"{audit.system} vs {audit.rater} ({audit.task}), topic model {audit.topic_model_version}, threshold "
          f"{audit.threshold:g}: {audit.n_judged} judged posts, MAE {audit.mae:.3f}, "
          f"{audit.n_over_sensitive} over-sensitive, {audit.n_under_sensitive} under-sensitive")  # fmt: skip
    print(f"\nworst {args.top} topics by error:")
    for t in worst(audit.topics, args.top):
        print(f"{t.error_rank:>3}. {t.topic_label} (topic {t.topic_id}): n={t.n_judged} system {t.system_mean:.3f} "
              f"person {t.human_mean:.3f} MAE {t.mae:.3f} over {t.over_sensitive_share:.0%} "
              f"under {t.under_sensitive_share:.0%}{'' if t.enough_judged else ' (few judged)'}")  # fmt: skip
        for direction, name in ((OVER, "system yes, person no"), (UNDER, "person yes, system no")):
            for ex in audit.examples.get((t.topic_id, direction), []):
                text = " ".join((ex.text or "").split())[:90]
                print(f"       {name}: {ex.link}\n         {text}")
    print(f"\naudit report: {path}")
    return 0


def cmd_rate(args: argparse.Namespace) -> int:
    """Serve the rater page on 127.0.0.1: one coder judges posts in the browser, each rating written at once to
    human_judgements, then sees their own audit of --system."""
    from bsky_warehouse.assets.topics import current_version
    from bsky_warehouse.calibration import CalibrationError, System, check_task
    from bsky_warehouse.judgements import JudgementFileError, check_rater_task
    from bsky_warehouse.rater.server import RaterSettings, serve
    from bsky_warehouse.resources.warehouse import WarehouseNotFound, WarehouseResource

    system = args.system
    if system is None and args.task == "toxicity":
        system = f"scorer:{DEFAULT_RATE_SCORER}"
    try:
        check_rater_task(args.rater, args.task)
        if system is not None:
            check_task(args.task, System.parse(system))
        if args.target < 1:
            raise ValueError(f"--target must be at least 1, got {args.target}")
        warehouse = WarehouseResource(lock_timeout_s=args.lock_timeout)
        with warehouse.read_only() as con:
            version = args.topic_model or current_version(con)
            assigned = con.execute("SELECT count(*) FROM post_topics WHERE topic_model_version = $v",
                                   {"v": version}).fetchall()[0][0]  # fmt: skip
    except (JudgementFileError, CalibrationError, ValueError, WarehouseNotFound) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not assigned:
        print(f"error: no post has a topic under {version or 'any topic model'}: materialize post_embeddings and "
              "post_topics (or run `make demo`)", file=sys.stderr)  # fmt: skip
        return 2
    prepare_manifest()
    settings_ = RaterSettings(rater=args.rater, task=args.task, topic_model_version=version, warehouse=warehouse,
                              system=system, target=args.target, instance=_instance)  # fmt: skip
    serve(settings_, args.port)
    return 0


def cmd_collect_jetstream(args: argparse.Namespace) -> int:
    """Write live Jetstream events as archive-format JSONL (one folder per day) for later loading."""
    from bsky_warehouse.resources.jetstream import JetstreamError, collect, collect_day

    out = Path(args.out)
    options = {
        "compress": args.compress,
        "zstd_dictionary": Path(args.zstd_dictionary) if args.zstd_dictionary else None,
    }
    try:
        if args.day:
            stats = collect_day(args.host, date.fromisoformat(args.day), out, **options)
        else:
            stats = collect(args.host, args.hours, out, **options)
    except JetstreamError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"events_written": stats.events_written, "files": [str(f) for f in stats.files],
                      "reconnects": stats.reconnects}))  # fmt: skip
    print(f"load it with: bsky-warehouse materialize --start DAY --archive {out}")
    return 0


def cmd_scan_author(args: argparse.Namespace) -> int:
    """Add the account's partition, scan its whole history, score it, and print its most toxic posts."""
    from bsky_warehouse.authors import normalize_actor
    from bsky_warehouse.pipeline import run_author_scan
    from bsky_warehouse.resources.appview import AppViewResource

    try:
        scan_key = normalize_actor(args.actor)
        resources = {"appview": AppViewResource.from_url(args.appview)} if args.appview else {}
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    prepare_manifest()
    ops: dict[str, Any] = {"author_toxicity_scores": {"config": {"scorer": args.scorer}}}
    if args.max_pages:
        ops["author_posts"] = {"config": {"max_pages": args.max_pages}}
    with logs_to_stderr():
        result = run_author_scan(scan_key, _instance(), run_config={"ops": ops}, resources=resources,
                                 raise_on_error=False, log_level="WARNING")  # fmt: skip
    if not result["success"]:
        print(json.dumps(result, indent=2, default=str), file=sys.stderr)
        return 1
    with _warehouse().connect() as con:
        top = con.execute(
            """SELECT r.toxicity_rank, round(r.prob_toxicity, 3), r.created_at::DATE::VARCHAR, r.link,
                      left(replace(r.text, chr(10), ' '), 80), s.author_did, s.author_handle, s.posts, s.rejected
               FROM author_scans s LEFT JOIN marts.author_toxicity_report r
                 ON r.author_did = s.author_did AND r.scorer = $scorer AND r.toxicity_rank <= $top
               WHERE s.scan_key = $key ORDER BY r.toxicity_rank""",
            {"key": scan_key, "scorer": args.scorer, "top": args.top},
        ).fetchall()
    _, _, _, _, _, did, handle, posts, rejected = top[0]
    ranked = [row[:5] for row in top if row[0] is not None]
    if args.json:
        print(json.dumps({"author": scan_key, "author_did": did, "author_handle": handle, "posts": posts,
                          "rejected": rejected, "scorer": args.scorer,
                          "most_toxic": [dict(zip(("rank", "toxicity", "day", "link", "text"), r, strict=True))
                                         for r in ranked]}))  # fmt: skip
        return 0
    print(f"{handle or scan_key} ({did}): {posts} posts scanned, {rejected} rejected; most toxic by {args.scorer}:")
    for rank, toxicity, day, link, text in ranked:
        print(f"{rank:>3}. {toxicity:.3f}  {day}  {link}\n     {text}")
    print("\nthe full ranking: table marts.author_toxicity_report")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Last good day per daily table, days missing from the last N, open incidents, failed checks; exit 1 when
    anything needs attention, 2 when there is no warehouse."""

    from bsky_warehouse.partitions import partition_start_date
    from bsky_warehouse.resources.warehouse import WarehouseNotFound
    from bsky_warehouse.status import failed_checks, format_status, materialized_partitions, warehouse_status

    try:
        as_of = date.fromisoformat(args.as_of) if args.as_of else datetime.now(UTC).date() - timedelta(days=1)
    except ValueError:
        print(f"error: --as-of {args.as_of!r} is not a date (YYYY-MM-DD)", file=sys.stderr)
        return 2
    instance = _instance() if (settings.DAGSTER_HOME.get() / "dagster.yaml").exists() else None
    try:
        with _warehouse().read_only() as con:
            built = materialized_partitions(instance) if instance else None
            status = warehouse_status(con, as_of, args.days, partition_start_date(), built)
    except (WarehouseNotFound, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if instance is not None:
        from bsky_warehouse.definitions import defs

        check_keys = list(defs.resolve_asset_graph().asset_check_keys)
        status.failed_checks = failed_checks(instance, check_keys)
        status.checks_known = True
    print(json.dumps(status.as_dict()) if args.json else format_status(status))
    return 0 if status.healthy else 1


def cmd_perspective_plan(args: argparse.Namespace) -> int:
    """How many posts the Perspective quota still allows and which: a sample stratified by day and language,
    weighted toward the posts the distilled model is least sure of, stored for `sample: planned` runs. The
    warehouse is read and written in two short connections; the sampling in between holds no lock."""

    from bsky_warehouse import perspective_plan as pp
    from bsky_warehouse.assets.distill import current_distilled_version

    try:
        quota = pp.parse_quota(args.qps, args.until, pp.parse_now(args.now, datetime.now(UTC)), args.margin)
        if not 0 < args.min_weight <= 1:
            raise pp.PlanError(f"--min-weight must be above 0 and at most 1, not {args.min_weight}")
    except pp.PlanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with _warehouse().connect() as con:
        version = args.distilled_version or current_distilled_version(con)
        known = {r[0] for r in con.execute("SELECT DISTINCT model_version FROM distilled_models").fetchall()}
        if args.distilled_version and args.distilled_version not in known:
            print(f"error: no distilled model {args.distilled_version!r} (stored: {sorted(known) or 'none'})",
                  file=sys.stderr)  # fmt: skip
            return 2
        candidates = pp.load_candidates(con, version)
        scored = pp.already_scored(con)
    params = pp.PlanParams(quota.posts, args.seed, args.min_weight, distilled_version=version)
    plan = pp.plan_sample(candidates, params)
    stored = 0
    if not args.dry_run:
        with _warehouse().connect() as con:
            stored = pp.store_plan(con, plan, datetime.now(UTC), {"quota": quota.as_dict()})
    summary = pp.plan_summary(plan, quota, scored, stored)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"quota: {quota.qps:g} QPS x {quota.seconds:,.0f} s until the end of {quota.until} (UTC) = "
          f"{quota.requests:,} requests; less the {quota.margin:.0%} margin: {quota.posts:,} posts")  # fmt: skip
    print(f"candidates: {plan.candidates:,} eligible posts without a Perspective score ({scored:,} already scored)")
    weighted = f"distilled model {version}" if version else "no distilled model (plain stratified sample)"
    print(f"planned: {len(plan.posts):,} posts in {len(plan.strata)} (day, language) strata, weighted by {weighted}")
    if args.dry_run:
        print("dry run: nothing stored")
    else:
        print(f"stored as {plan.plan_id} in perspective_plan; score it with toxicity_scores config "
              '{"scorer": "perspective", "sample": "planned"}')  # fmt: skip
    return 0


ARCHIVE_HELP = "directory of Jetstream JSONL dumps (default: the sample)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bsky-warehouse", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback when a command fails")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="parse the dbt project (needed before the definitions load)").set_defaults(
        func=cmd_prepare
    )
    demo = sub.add_parser("demo", help="load the shipped sample end to end into the warehouse")
    demo.add_argument("--start", default=SAMPLE_WINDOW.start.isoformat(), help="first day (default: the sample's)")
    demo.add_argument("--end", default=SAMPLE_WINDOW.end.isoformat(), help="day after the last (exclusive)")
    demo.add_argument("--archive", default=str(SAMPLE_DIR), help=ARCHIVE_HELP)
    demo.set_defaults(func=cmd_demo)

    mat = sub.add_parser("materialize", help="materialize a day or a range of days from an archive directory")
    mat.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    mat.add_argument("--end", help="day after the last (exclusive); default: one day")
    mat.add_argument(
        "--archive", default=str(SAMPLE_DIR), help="directory of Jetstream JSONL dumps (default: the sample)"
    )
    mat.add_argument("--scorer", help="toxicity scorer for this run (default: profanity-check)")
    mat.add_argument("--labeler", help="also label: openai (LLM_BASE_URL, LLM_MODEL) or vllm (VLLM_MODEL)")
    mat.add_argument("--sample", choices=["all", "planned"], default="all",
                     help="with --scorer perspective: score every eligible post (all) or only the posts of the "
                     "latest `perspective plan` (planned)")  # fmt: skip
    mat.add_argument("--json", action="store_true", help="print the whole run result as JSON instead of the table")
    mat.set_defaults(func=cmd_materialize)

    check = sub.add_parser("check", help="materialize the sample and run every asset check and dbt test")
    check.add_argument("--archive", default=str(SAMPLE_DIR), help=ARCHIVE_HELP)
    check.set_defaults(func=cmd_check)

    docs = sub.add_parser("docs", help="generate (and serve) the dbt docs site")
    docs.add_argument("--serve", action="store_true", help="serve the site after generating it")
    docs.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    docs.add_argument("--port", type=int, default=8080, help="port to serve on (default 8080)")
    docs.set_defaults(func=cmd_docs)

    collect_parser = sub.add_parser("collect", help="collect live data to archive-format files")
    collect_sub = collect_parser.add_subparsers(dest="source", required=True)
    jet = collect_sub.add_parser("jetstream", help="Jetstream v1 events (app.bsky.feed.post)")
    jet.add_argument("--out", required=True, help="directory; one sub-folder per UTC day")
    when = jet.add_mutually_exclusive_group(required=True)
    when.add_argument("--hours", type=float, help="the last H hours up to now (Jetstream keeps about 36)")
    when.add_argument("--day", help="one whole UTC day, YYYY-MM-DD, still inside Jetstream's retention")
    jet.add_argument("--host", default="jetstream2.us-east.bsky.network", help="Jetstream host (or ws://host:port)")
    jet.add_argument("--compress", action="store_true", help="zstd frames (needs --zstd-dictionary)")
    jet.add_argument("--zstd-dictionary", help="Jetstream's published zstd dictionary file")
    jet.set_defaults(func=cmd_collect_jetstream)

    scan = sub.add_parser("scan-author", help="scan an account's whole history and rank its posts by toxicity")
    scan.add_argument("actor", help="handle (name.bsky.social) or DID")
    scan.add_argument("--scorer", default="profanity-check", help="toxicity scorer (default: profanity-check)")
    scan.add_argument("--max-pages", type=int, help="stop after this many pages of 100 (default: whole history)")
    scan.add_argument("--appview", help="AppView URL (default: ${BSKY_APPVIEW_URL} or https://public.api.bsky.app)")
    scan.add_argument("--top", type=int, default=10, help="how many of the most toxic posts to print")
    scan.add_argument("--json", action="store_true", help="print the result as JSON")
    scan.set_defaults(func=cmd_scan_author)

    ev = sub.add_parser("eval", help="evaluate scorers or labelers against references")
    ev_sub = ev.add_subparsers(dest="what", required=True)
    ev_scorers = ev_sub.add_parser("scorers", help="agreement of each scorer with the reference scorer")
    ev_scorers.add_argument("--reference", default=REFERENCE_SCORER, help="reference scorer (default: %(default)s)")
    ev_scorers.add_argument("--json", action="store_true", help="print the figures as JSON")
    ev_scorers.set_defaults(func=cmd_eval_scorers)
    ev_labels = ev_sub.add_parser("labels", help="accuracy of each labeler against the reference hand labels")
    ev_labels.add_argument("--json", action="store_true", help="print the figures as JSON")
    ev_labels.set_defaults(func=cmd_eval_labels)
    ev_compare = ev_sub.add_parser("compare", help="two labelers or two scorers, paired on the posts both answered")
    ev_compare.add_argument("a", help="labeler/model (e.g. import/gpt-4) or scorer:name")
    ev_compare.add_argument("b", help="the other system, of the same kind")
    ev_compare.add_argument("--task", required=True,
                            help="sociopolitical, ideology, ideology_given_sociopolitical or ideology_both_labelled "
                            "for labelers; "
                            "an attribute (e.g. toxicity) for scorers")  # fmt: skip
    ev_compare.add_argument("--reference", default=REFERENCE_SCORER, help="reference scorer (scorer comparisons)")
    ev_compare.add_argument("--json", action="store_true", help="print the comparison as JSON")
    ev_compare.set_defaults(func=cmd_eval_compare)

    imp = sub.add_parser("import", help="import data made elsewhere into the warehouse")
    imp_sub = imp.add_subparsers(dest="what", required=True)
    judge = imp_sub.add_parser("judgements", help="one rater's judgements of posts (CSV or Parquet)")
    judge.add_argument("file", help=".csv or .parquet; posts by `uri` (at://) or `link` (bsky.app)")
    judge.add_argument("--rater", required=True, help="who judged, e.g. bluesky-research-2024")
    judge.add_argument(
        "--task",
        required=True,
        choices=["toxicity", "sociopolitical", "ideology"],
        help="toxicity: 0-4, -1 unsure; sociopolitical: yes/no; ideology: left/right/moderate/unclear",
    )
    judge.add_argument("--uri-column", help="the column naming the post (default: uri, link or url)")
    judge.add_argument("--value-column", help="the column with the judgement (default: value, then the task's name)")
    judge.add_argument("--handle-map", help="CSV of handle,did (or link,uri) for links that name handles")
    judge.add_argument("--json", action="store_true", help="print the import's outcome as JSON")
    judge.set_defaults(func=cmd_import_judgements)

    audit = sub.add_parser("audit", help="where a scorer or labeler disagrees with a rater, topic by topic")
    audit.add_argument("--system", required=True, help="scorer:<scorer> or labeler:<labeler>/<model>")
    audit.add_argument("--rater", required=True, help="rater name, as in human_judgements")
    audit.add_argument("--task", required=True, choices=["toxicity", "sociopolitical"], help="the judged task")
    audit.add_argument("--threshold", type=float, help="what-if: the audit with the system flagging at this "
                       "score, in its own tables (marts.<model>__whatif_<system>_<threshold>); the shared audit "
                       "is unchanged")  # fmt: skip
    audit.add_argument("--topic-model", help="topic_model_version (default: the most recently fitted one audited)")
    audit.add_argument("--top", type=int, default=5, help="topics to show per list (default 5)")
    audit.add_argument("--examples", type=int, default=3, help="example posts per topic and direction (default 3)")
    audit.add_argument("--out", help="Markdown report path (default: reports/audits/<system>__<rater>__<task>.md)")
    audit.add_argument("--json", action="store_true", help="print the summary as JSON")
    audit.set_defaults(func=cmd_audit)

    cal = sub.add_parser("calibrate", help="fit a rater's personal calibration of a scorer or labeler")
    cal.add_argument("--rater", required=True, help="rater name, as in human_judgements")
    cal.add_argument("--task", required=True, choices=["toxicity", "sociopolitical"], help="the judged task")
    cal.add_argument("--system", required=True, help="scorer:<scorer> or labeler:<labeler>/<model>")
    cal.add_argument("--embeddings", action="store_true", help="also fit on the post embeddings")
    cal.add_argument("--embedding-model", help="which post_embeddings model (default: the only one)")
    cal.add_argument("--json", action="store_true", help="print the fit as JSON")
    cal.set_defaults(func=cmd_calibrate)

    rate = sub.add_parser("rate", help="a local page (127.0.0.1) where a coder judges posts and sees their audit")
    rate.add_argument("--rater", required=True, help="who is rating, as human_judgements.rater will say")
    rate.add_argument(
        "--task",
        required=True,
        choices=["toxicity", "sociopolitical", "ideology"],
        help="toxicity: 0-4 or unsure; sociopolitical: yes/no; ideology: left/right/moderate/unclear",
    )
    rate.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765)")
    rate.add_argument("--system", help="whose audit the rater sees (and only posts it answered are drawn): "
                      "scorer:<scorer> or labeler:<labeler>/<model> "
                      f"(default for toxicity: scorer:{DEFAULT_RATE_SCORER})")  # fmt: skip
    rate.add_argument(
        "--target",
        type=int,
        default=40,
        help="judgements before the page shows the audit (default 40, what calibration needs)",
    )
    rate.add_argument("--topic-model", help="topic_model_version to stratify by (default: the latest fitted)")
    rate.add_argument(
        "--lock-timeout",
        type=float,
        default=120.0,
        help="seconds a rating waits for the warehouse lock while a job writes (default 120)",
    )
    rate.set_defaults(func=cmd_rate)

    status = sub.add_parser("status", help="last good day per table, missing days, open incidents, failed checks")
    status.add_argument("--as-of", help="the last day that should be complete (default: yesterday, UTC)")
    status.add_argument("--days", type=int, default=30, help="how many days back to look for gaps (default 30)")
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    status.set_defaults(func=cmd_status)

    from bsky_warehouse import perspective_plan as pp

    persp = sub.add_parser("perspective", help="the last of the Perspective quota")
    persp_sub = persp.add_subparsers(dest="what", required=True)
    plan = persp_sub.add_parser("plan", help="how many posts the quota allows and which to send (stored)")
    plan.add_argument("--qps", required=True, help="the project's quota, requests per second")
    last_day = pp.PERSPECTIVE_LAST_DAY
    plan.add_argument("--until", default=last_day.isoformat(), help=f"last day (UTC) to spend on (default {last_day})")
    plan.add_argument("--margin", type=float, default=pp.DEFAULT_MARGIN,
                      help=f"share held back for retries and downtime (default {pp.DEFAULT_MARGIN})")  # fmt: skip
    plan.add_argument("--seed", type=int, default=pp.DEFAULT_SEED, help=f"sampling seed (default {pp.DEFAULT_SEED})")
    plan.add_argument("--min-weight", type=float, default=pp.DEFAULT_MIN_WEIGHT,
                      help=f"weight of a post the model is sure of (default {pp.DEFAULT_MIN_WEIGHT})")  # fmt: skip
    plan.add_argument("--distilled-version", help="distilled model whose uncertainty weights (default: the latest)")
    plan.add_argument("--now", help="count the quota from this ISO time instead of now (to reproduce a plan)")
    plan.add_argument("--dry-run", action="store_true", help="print the plan, store nothing")
    plan.add_argument("--json", action="store_true", help="print the plan summary as JSON")
    plan.set_defaults(func=cmd_perspective_plan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    from dagster import BetaWarning, PreviewWarning, SupersessionWarning

    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
    # The freshness checks use the time-partition API that Dagster marks superseded; it still works as documented.
    warnings.filterwarnings("ignore", category=SupersessionWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        return args.func(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line, not a traceback: --debug shows it
        print(f"error: {one_line(err)} (run with --debug for the traceback)", file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    """The innermost cause of an error chain, as one line."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def entry() -> None:
    """The `bsky-warehouse` command: `main`, the exit handlers (multiprocessing's clean-up among them), then an
    exit that skips the interpreter's module teardown. DuckDB's bindings (nanobind) print a multi-page "leaked
    instances" dump when Python finalizes modules that still hold DuckDB type objects; every file and
    connection is closed by then, so nothing is lost by not finalizing."""
    import atexit

    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
