"""Author history scans (the toxic-account scanner): one account's whole history, scored and ranked.

A scan is its own sampling frame, so its posts live in `author_posts`, not in `raw_posts`: putting an account's
years of history into the daily partitions would make every daily mart count one person's back catalogue as
if it had been posted that day. Posts that the daily pipeline already scored are not paid for twice: a scan
copies their scores when the scorer and its version match.

The AppView pages newest first and an account can have tens of thousands of posts, so pages are spooled to a
JSONL file as they arrive and loaded in one short transaction; memory stays bounded and the writer lock is
held only for the load. Items that cannot be read go to `rejected_records` (source `author`) with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from bsky_warehouse.checkpoint import Checkpoint, not_retryable_sql
from bsky_warehouse.events import parse_event
from bsky_warehouse.progress import Progress
from bsky_warehouse.records import PostText, Scorer
from bsky_warehouse.resources.appview import AppViewClient, item_to_event
from bsky_warehouse.resources.warehouse import registered, transaction

# Replies included: a scanner of toxic accounts that skipped replies would miss most of what it looks for.
DEFAULT_FILTER = "posts_with_replies"
AUTHOR_FEED_FILTERS = ("posts_with_replies", "posts_no_replies", "posts_with_media", "posts_and_author_threads")

_HANDLE = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_DID = re.compile(r"^did:[a-z]+:[A-Za-z0-9._:%-]+$")


def normalize_actor(actor: str) -> str:
    """A handle or DID as given by a person, as a partition key: `@Alice.BSKY.social ` -> `alice.bsky.social`.

    Raises ValueError naming the input when it is neither, so a typo never becomes a partition.
    """
    key = actor.strip().removeprefix("@")
    if key.startswith("did:"):
        if not _DID.match(key) or len(key) > 2048:
            raise ValueError(f"{actor!r} is not a valid DID")
        return key
    key = key.lower()
    if len(key) > 253 or not _HANDLE.match(key):
        raise ValueError(f"{actor!r} is neither a handle (name.bsky.social) nor a DID (did:plc:…)")
    return key


@dataclass
class ScanStats:
    items: int = 0
    posts: int = 0
    reposts_skipped: int = 0
    requests: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Scan:
    scan_key: str
    author_did: str
    author_handle: str | None
    spool: Path
    stats: ScanStats


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot spool {type(value).__name__}")


def spool_author_feed(
    client: AppViewClient,
    scan_key: str,
    spool: Path,
    feed_filter: str = DEFAULT_FILTER,
    max_pages: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Scan:
    """Page through the account's feed into `spool`: one JSON line per post or per rejected item. A long history
    is thousands of pages at the AppView's rate: `log` gets the progress (progress.py)."""
    if feed_filter not in AUTHOR_FEED_FILTERS:
        raise ValueError(f"filter {feed_filter!r} is not one of {', '.join(AUTHOR_FEED_FILTERS)}")
    did = client.resolve_handle(scan_key)
    stats = ScanStats()
    handle: str | None = None if scan_key.startswith("did:") else scan_key
    spool.parent.mkdir(parents=True, exist_ok=True)
    requests_before, reposts_before, invalid_before = client.requests, client.skipped_reposts, len(client.invalid)
    progress = Progress(f"scan {scan_key}", None, log=log, unit="items")
    with spool.open("w", encoding="utf-8") as out:
        for item in client.get_author_feed(did, max_pages=max_pages, filter=feed_filter):
            stats.items += 1
            progress.advance()
            handle = item.author_handle or handle
            line = json.dumps(item_to_event(item), ensure_ascii=False)
            outcome = parse_event(line.encode())
            if outcome.kind == "post" and outcome.row is not None and outcome.row["author_did"] == did:
                entry = {"kind": "post", **outcome.row, "line_no": item.rank, "like_count": item.like_count,
                         "repost_count": item.repost_count, "reply_count": item.reply_count}  # fmt: skip
            else:
                reason = "not_the_author" if outcome.kind == "post" else (outcome.reason or outcome.kind)
                entry = {"kind": "reject", "reason": reason, "line_no": item.rank, "raw": line}
            out.write(json.dumps(entry, default=_json_default, ensure_ascii=False) + "\n")
        for bad in client.invalid[invalid_before:]:
            stats.items += 1
            progress.advance()
            out.write(json.dumps({"kind": "reject", "reason": bad.reason, "line_no": bad.rank,
                                  "raw": json.dumps(bad.item, default=str)}) + "\n")  # fmt: skip
    progress.close()
    stats.requests = client.requests - requests_before
    stats.reposts_skipped = client.skipped_reposts - reposts_before
    return Scan(scan_key, did, handle, spool, stats)


_SPOOL_COLUMNS = {
    "kind": "VARCHAR", "uri": "VARCHAR", "cid": "VARCHAR", "author_did": "VARCHAR", "text": "VARCHAR",
    "created_at": "TIMESTAMPTZ", "langs": "VARCHAR[]", "reply_parent_uri": "VARCHAR", "reply_root_uri": "VARCHAR",
    "embed_type": "VARCHAR", "facets": "VARCHAR", "labels": "VARCHAR", "like_count": "BIGINT",
    "repost_count": "BIGINT", "reply_count": "BIGINT", "reason": "VARCHAR", "line_no": "BIGINT", "raw": "VARCHAR",
}  # fmt: skip


def load_scan(con: duckdb.DuckDBPyConnection, scan: Scan, scanned_at: datetime) -> ScanStats:
    """Replace the account's posts, rejects and scan record with this scan's, in one transaction.

    A post seen twice in one scan (the AppView can repeat an item across pages) is kept once. Posts gone from
    the account since the last scan (deleted) disappear along with their scores.
    """
    stats = scan.stats
    did = {"did": scan.author_did}
    params = {**did, "key": scan.scan_key, "handle": scan.author_handle, "at": scanned_at}
    with transaction(con):
        con.execute(
            "CREATE OR REPLACE TEMP TABLE scan_spool AS SELECT * FROM read_json($path, format = 'newline_delimited', "
            "columns = $columns)",
            {"path": str(scan.spool), "columns": _SPOOL_COLUMNS},
        )
        con.execute("DELETE FROM author_posts WHERE author_did = $did", did)
        con.execute(
            """INSERT INTO author_posts BY NAME
               SELECT * EXCLUDE (kind, reason, line_no, raw, rn), $handle AS author_handle, $at AS scanned_at
               FROM (SELECT *, row_number() OVER (PARTITION BY uri ORDER BY line_no NULLS LAST) AS rn
                     FROM scan_spool WHERE kind = 'post')
               WHERE rn = 1""",
            {"handle": scan.author_handle, "at": scanned_at},
        )
        con.execute(
            """DELETE FROM author_toxicity_scores WHERE author_did = $did
               AND uri NOT IN (SELECT uri FROM author_posts WHERE author_did = $did)""",
            did,
        )
        con.execute("DELETE FROM rejected_records WHERE source = 'author' AND file = $did", did)
        con.execute(
            """INSERT INTO rejected_records BY NAME
               SELECT 'author' AS source, raw, reason, $did AS file, line_no, NULL::DATE AS partition_date,
                      $at AS ingested_at
               FROM scan_spool WHERE kind = 'reject'""",
            {**did, "at": scanned_at},
        )
        stats.posts = con.execute("SELECT count(*) FROM author_posts WHERE author_did = $did", did).fetchall()[0][0]
        stats.rejected = dict(
            con.execute(
                "SELECT reason, count(*) FROM scan_spool WHERE kind = 'reject' GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
        con.execute("DELETE FROM author_scans WHERE scan_key = $key", {"key": scan.scan_key})
        con.execute(
            """INSERT INTO author_scans BY NAME
               SELECT $key AS scan_key, $did AS author_did, $handle AS author_handle, $at AS scanned_at,
                      $items AS items, $posts AS posts, $rejected AS rejected, $reposts AS reposts_skipped,
                      $requests AS requests""",
            {**params, "items": stats.items, "posts": stats.posts, "rejected": sum(stats.rejected.values()),
             "reposts": stats.reposts_skipped, "requests": stats.requests},
        )  # fmt: skip
        con.execute("DROP TABLE scan_spool")
    scan.spool.unlink(missing_ok=True)
    return stats


def scanned_did(con: duckdb.DuckDBPyConnection, scan_key: str) -> str:
    """The DID a scan key (handle or DID) was resolved to by its last `author_posts` run."""
    row = con.execute("SELECT author_did FROM author_scans WHERE scan_key = $key", {"key": scan_key}).fetchone()
    if row is None:
        raise LookupError(f"author {scan_key!r} has not been scanned: materialize author_posts for it first")
    return row[0]


def score_author(
    warehouse: Any,
    scan_key: str,
    scorer: Scorer,
    columns: Callable[[Any], Mapping[str, Any]],
    retry_failed: bool = True,
) -> dict[str, Any]:
    """Score every scanned post of the account once per scorer version, checkpointed like the daily scores.

    Posts the daily pipeline already scored with the same scorer version are copied, not re-scored; the rest
    are checkpointed as they arrive, so a killed scan resumes without paying again.
    """
    version = {"scorer": scorer.name, "scorer_version": scorer.version}
    with warehouse.connect() as con:
        did = scanned_did(con, scan_key)
        params = {"did": did, **version}
        done = f"""SELECT uri FROM author_toxicity_scores WHERE author_did = $did AND scorer = $scorer
                   AND scorer_version = $scorer_version{not_retryable_sql(retry_failed)}"""
        reused = con.execute(
            f"""SELECT t.* EXCLUDE (partition_date, inclusion_probability)
                FROM toxicity_scores t JOIN author_posts p USING (uri)
                WHERE p.author_did = $did AND t.scorer = $scorer AND t.scorer_version = $scorer_version
                  AND t.status = 'ok' AND t.uri NOT IN ({done})""",
            params,
        ).df()
        todo_rows = con.execute(
            f"""SELECT uri, coalesce(text, ''), coalesce(langs, []) FROM author_posts
                WHERE author_did = $did AND uri NOT IN ({done}) ORDER BY created_at DESC, uri""",
            params,
        ).fetchall()
    checkpoint = Checkpoint(warehouse.staging_dir, "author_toxicity_scores", version.values(), did)
    resumed = checkpoint.rows()
    reused_uris = set(reused["uri"]) if len(reused) else set()
    todo = [PostText(u, t, tuple(langs)) for u, t, langs in todo_rows if u not in resumed and u not in reused_uris]
    fixed = {**version, "author_did": did}
    with checkpoint:
        if todo:
            scorer.score(todo, lambda result: checkpoint.append({**columns(result), **fixed, "uri": result.uri}))
    rows = list(checkpoint.rows().values())
    if len(reused):
        reused["scored_at"] = reused["scored_at"].map(lambda moment: moment.isoformat())
        rows += [{**row, "author_did": did} for row in reused.to_dict("records")]
    with warehouse.connect() as con:
        merge_author_scores(con, did, version, rows)
        by_status = dict(
            con.execute(
                """SELECT status || coalesce(':' || reason, ''), count(*) FROM author_toxicity_scores
                   WHERE author_did = $did AND scorer = $scorer GROUP BY 1 ORDER BY 1""",
                {"did": did, "scorer": scorer.name},
            ).fetchall()
        )
    checkpoint.discard()
    return {
        "author_did": did,
        "posts_to_score": len(todo_rows),
        "resumed_from_checkpoint": len(resumed),
        "copied_from_daily_scores": len(reused_uris),
        "requested": len(todo),
        "by_status": by_status,
    }


def merge_author_scores(
    con: duckdb.DuckDBPyConnection, did: str, version: Mapping[str, str], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Replace the scorer's rows for these uris, only for posts the account still has; one transaction."""
    if not rows:
        return
    import pandas as pd

    with transaction(con), registered(con, "author_score_frame", pd.DataFrame.from_records(list(rows))):
        con.execute(
            """DELETE FROM author_toxicity_scores WHERE scorer = $scorer
               AND uri IN (SELECT uri FROM author_score_frame)""",
            {"scorer": version["scorer"]},
        )
        con.execute(
            """INSERT INTO author_toxicity_scores BY NAME
               SELECT * FROM author_score_frame
               WHERE uri IN (SELECT uri FROM author_posts WHERE author_did = $did)""",
            {"did": did},
        )


def scan_summary(scan: Scan, stats: ScanStats) -> dict[str, Any]:
    """Materialization metadata for a scan."""
    return {"author_did": scan.author_did, "author_handle": scan.author_handle or "", **asdict(stats)}


def spool_path(staging_dir: Path, scan_key: str, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%f")
    return staging_dir / "author_posts" / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', scan_key)}-{stamp}.jsonl"
