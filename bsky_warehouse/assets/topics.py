"""Post embeddings and topics: embed each day's eligible posts once, fit a topic model once, assign every day.

`post_embeddings` embeds the cleaned posts that pass the filters and have no embedding from this model yet,
in chunks written as they finish (an interrupted day resumes where it stopped), and drops rows of posts that
are no longer eligible. `post_topics` assigns each day's posts with one stored topic model (the configured
version, else the most recently fitted): the first run, or `refit`, fits one over a deterministic sample of
all embedded posts (ordered by md5 of the uri) and stores it in `topic_models`, so re-running a day reproduces
its topics exactly. The writer connection is held only to read inputs and to write results, never while the
model embeds or clusters. See topics.py for the choice of clustering and labels.
"""

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, BackfillPolicy, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from bsky_warehouse.checkpoint import ELIGIBLE_SQL, claim
from bsky_warehouse.partitions import DayWindow, daily_partitions
from bsky_warehouse.progress import Progress
from bsky_warehouse.resources.warehouse import WarehouseResource, insert_rows, transaction
from bsky_warehouse.schema import EMBEDDING_DIM
from bsky_warehouse.topics import Topic, TopicModel, TopicParams

EMBED_CHUNK = 1024


class EmbeddingsConfig(Config):
    chunk_size: int = Field(default=EMBED_CHUNK, description="Posts embedded between two writes (resume granularity).")


class TopicsConfig(Config):
    topic_model_version: str | None = Field(
        default=None, description="Assign with this stored topic model; default: the most recently fitted one."
    )
    refit: bool = Field(default=False, description="Fit a topic model over the current sample before assigning.")
    sample_size: int = Field(default=5000, description="Posts a fit samples from post_embeddings (all days).")
    n_topics: int | None = Field(default=None, description="Topics to fit; default: round(sqrt(n/2)) in [2, 40].")
    seed: int = Field(default=0, description="k-means random_state.")


def as_matrix(vectors: list) -> np.ndarray:
    """Stored FLOAT[384] values as an (n, 384) float32 matrix, (0, 384) when there are none."""
    if not vectors:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    return np.asarray(vectors, dtype=np.float32)


def embed_day(
    warehouse: WarehouseResource, day: date, chunk_size: int, log: Callable[[str], None] | None = None
) -> dict[str, int]:
    """Embed the day's eligible posts that lack an embedding, a chunk per short write; drop the no longer
    eligible. A rerun embeds nothing twice. `log` gets the progress (progress.py)."""
    from bsky_warehouse.embeddings import EMBEDDING_MODEL, embed_texts

    lock = warehouse.staging_dir / "post_embeddings" / f"{day.isoformat()}.lock"
    with claim(lock, f"post_embeddings for partition {day} ({EMBEDDING_MODEL})", warehouse.lock_timeout_s):
        return _embed_claimed(warehouse, day, chunk_size, embed_texts, EMBEDDING_MODEL, log)


def _embed_claimed(
    warehouse: WarehouseResource,
    day: date,
    chunk_size: int,
    embed_texts: Any,
    model: str,
    log: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """`embed_day` once this run holds the partition: a second run of the same day waits, then finds the work
    done. Each chunk replaces any rows of its uris, so even a run that did not claim cannot double a row."""
    params = {"model": model, "day": day}
    with warehouse.connect() as con:
        todo = con.execute(
            """SELECT uri, text FROM cleaned_posts WHERE partition_date = $day AND passes_filters
                 AND uri NOT IN (SELECT uri FROM post_embeddings WHERE embedding_model = $model)
               ORDER BY uri""",
            params,
        ).fetchall()
    size = max(1, chunk_size)
    progress = Progress(f"embedding {day}", len(todo), log=log)
    for start in range(0, len(todo), size):
        chunk = todo[start : start + size]
        frame = pd.DataFrame({"uri": [uri for uri, _ in chunk], "embedding": list(embed_texts([t for _, t in chunk]))})
        frame["embedding_model"] = model
        frame["embedded_at"] = datetime.now(UTC)
        frame["partition_date"] = day
        with warehouse.connect() as con, transaction(con):
            con.execute(
                "DELETE FROM post_embeddings WHERE embedding_model = $model AND list_contains($uris, uri)",
                {"model": model, "uris": frame["uri"].tolist()},
            )
            insert_rows(con, "post_embeddings", frame)
        progress.advance(len(chunk))
    progress.close()
    with warehouse.connect() as con:
        dropped = con.execute(
            f"""DELETE FROM post_embeddings WHERE embedding_model = $model AND partition_date = $day
                  AND uri NOT IN ({ELIGIBLE_SQL})""",
            params,
        ).fetchall()[0][0]
        rows = con.execute(
            "SELECT count(*) FROM post_embeddings WHERE embedding_model = $model AND partition_date = $day", params
        ).fetchall()[0][0]
    return {"embedded": len(todo), "dropped": int(dropped), "rows": int(rows)}


@asset(
    deps=["cleaned_posts"],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="topics",
    description="all-MiniLM-L6-v2 sentence embedding (384 floats, unit length) of each post that passes the "
    "filters; unique on (uri, embedding_model). Needs the [topics] extra.",
)
def post_embeddings(
    context: AssetExecutionContext, config: EmbeddingsConfig, warehouse: WarehouseResource
) -> MaterializeResult:
    from bsky_warehouse.embeddings import EMBEDDING_MODEL

    per_day = {}
    for day in DayWindow.from_time_window(context.partition_time_window).days():
        per_day[day.isoformat()] = embed_day(warehouse, day, config.chunk_size, log=context.log.info)
        context.log.info(f"{day} {EMBEDDING_MODEL}: {per_day[day.isoformat()]}")
    return MaterializeResult(
        metadata={
            "embedding_model": EMBEDDING_MODEL,
            "dagster/row_count": sum(s["rows"] for s in per_day.values()),
            "embedded": sum(s["embedded"] for s in per_day.values()),
            "dropped_not_eligible": sum(s["dropped"] for s in per_day.values()),
            "per_day": per_day,
        }
    )


def current_version(con: duckdb.DuckDBPyConnection) -> str | None:
    """The most recently fitted topic model (ties: the greater version, so the answer never wavers)."""
    row = con.execute(
        "SELECT topic_model_version FROM topic_models ORDER BY fitted_at DESC, topic_model_version DESC LIMIT 1"
    ).fetchone()
    return row[0] if row else None


def draw_sample(
    con: duckdb.DuckDBPyConnection, embedding_model: str, sample_size: int
) -> tuple[list[str], list[str], np.ndarray]:
    """Up to `sample_size` eligible embedded posts of every day, the same ones for the same table contents."""
    rows = con.execute(
        """SELECT e.uri, c.text, e.embedding FROM post_embeddings e
           JOIN cleaned_posts c ON c.uri = e.uri AND c.passes_filters
           WHERE e.embedding_model = $model ORDER BY md5(e.uri), e.uri LIMIT $n""",
        {"model": embedding_model, "n": sample_size},
    ).fetchall()
    vectors = as_matrix([row[2] for row in rows])
    return [row[0] for row in rows], [row[1] for row in rows], vectors


def store_topic_model(con: duckdb.DuckDBPyConnection, model: TopicModel, fitted_at: datetime) -> bool:
    """Insert the model's topics, or (same version fitted again) mark it fitted now; True if inserted."""
    with transaction(con):
        exists = con.execute(
            "SELECT count(*) FROM topic_models WHERE topic_model_version = $v", {"v": model.version}
        ).fetchall()[0][0]
        if exists:
            con.execute(
                "UPDATE topic_models SET fitted_at = $at WHERE topic_model_version = $v",
                {"at": fitted_at, "v": model.version},
            )
        else:
            frame = pd.DataFrame(
                {
                    "topic_id": [t.topic_id for t in model.topics],
                    "label": [t.label for t in model.topics],
                    "top_terms": [list(t.top_terms) for t in model.topics],
                    "size": [t.size for t in model.topics],
                    "centroid": [t.centroid for t in model.topics],
                }
            )
            frame["topic_model_version"] = model.version
            frame["embedding_model"] = model.embedding_model
            frame["params"] = json.dumps(model.params, sort_keys=True)
            frame["fitted_at"] = fitted_at
            insert_rows(con, "topic_models", frame)
    return not exists


def load_topic_model(con: duckdb.DuckDBPyConnection, version: str) -> TopicModel:
    rows = con.execute(
        """SELECT topic_id, label, top_terms, size, centroid, embedding_model, params FROM topic_models
           WHERE topic_model_version = $v ORDER BY topic_id""",
        {"v": version},
    ).fetchall()
    if not rows:
        known = [
            r[0] for r in con.execute("SELECT DISTINCT topic_model_version FROM topic_models ORDER BY 1").fetchall()
        ]
        raise Failure(f"no topic model {version!r} in topic_models (stored: {known or 'none'})")
    topics = tuple(
        Topic(topic_id, label, tuple(terms), size, np.asarray(centroid, dtype=np.float32))
        for topic_id, label, terms, size, centroid, _, _ in rows
    )
    return TopicModel(version, rows[0][5], json.loads(rows[0][6]), topics)


def fit_and_store(warehouse: WarehouseResource, config: TopicsConfig) -> tuple[TopicModel, bool]:
    """Fit over the sample (connection closed while clustering) and store; (model, newly inserted)."""
    from bsky_warehouse.embeddings import EMBEDDING_MODEL
    from bsky_warehouse.topics_fit import fit_topic_model  # scikit-learn: only when fitting

    with warehouse.connect() as con:
        uris, texts, vectors = draw_sample(con, EMBEDDING_MODEL, config.sample_size)
    if len(uris) < 2:
        raise Failure(
            f"cannot fit topics: post_embeddings holds {len(uris)} eligible {EMBEDDING_MODEL} embeddings; "
            "materialize post_embeddings for some days first"
        )
    params = TopicParams(n_topics=config.n_topics, seed=config.seed)
    model = fit_topic_model(uris, texts, vectors, EMBEDDING_MODEL, params)
    with warehouse.connect() as con:
        inserted = store_topic_model(con, model, datetime.now(UTC))
    return model, inserted


def resolve_topic_model(warehouse: WarehouseResource, config: TopicsConfig, log: Any) -> tuple[TopicModel, str]:
    """The model to assign with and how it was chosen: configured, current, or fitted by this run."""
    if config.topic_model_version and config.refit:
        raise Failure("set either topic_model_version (assign with a stored model) or refit (fit a new one), not both")
    with warehouse.connect() as con:
        if config.topic_model_version:
            return load_topic_model(con, config.topic_model_version), "configured"
        version = None if config.refit else current_version(con)
        if version:
            return load_topic_model(con, version), "current"
    model, inserted = fit_and_store(warehouse, config)
    log.info(f"topic model {model.version}: {len(model.topics)} topics {'fitted' if inserted else 'refitted (same)'}")
    with warehouse.connect() as con:
        return load_topic_model(con, model.version), "fitted" if inserted else "refitted_unchanged"


def assign_day(warehouse: WarehouseResource, model: TopicModel, day: date) -> dict[str, Any]:
    """Replace the day's rows for this model version with each eligible embedded post's nearest topic."""
    with warehouse.connect() as con:
        rows = con.execute(
            """SELECT c.uri, e.embedding FROM cleaned_posts c
               JOIN post_embeddings e ON e.uri = c.uri AND e.embedding_model = $model
               WHERE c.partition_date = $day AND c.passes_filters ORDER BY c.uri""",
            {"model": model.embedding_model, "day": day},
        ).fetchall()
        eligible = con.execute(
            "SELECT count(*) FROM cleaned_posts WHERE partition_date = $day AND passes_filters", {"day": day}
        ).fetchall()[0][0]
    vectors = as_matrix([r[1] for r in rows])
    topic_ids, distances = model.assign(vectors)
    labels = model.labels()
    frame = pd.DataFrame(
        {
            "uri": [r[0] for r in rows],
            "topic_id": topic_ids.astype(np.int32),
            "topic_label": [labels[int(t)] for t in topic_ids],
            "distance": distances.astype(np.float64),
        }
    )
    frame["topic_model_version"] = model.version
    frame["assigned_at"] = datetime.now(UTC)
    frame["partition_date"] = day
    with warehouse.connect() as con, transaction(con):
        # The day's rows, and any row of these uris filed under another day: one row per (uri, version).
        con.execute(
            """DELETE FROM post_topics WHERE topic_model_version = $v
                   AND (partition_date = $day OR uri IN (SELECT uri FROM cleaned_posts WHERE partition_date = $day))""",
            {"v": model.version, "day": day},
        )
        insert_rows(con, "post_topics", frame)
    return {
        "assigned": len(frame),
        "without_embedding": int(eligible) - len(frame),
        "by_topic": Counter(int(t) for t in topic_ids),
    }


def topics_markdown(model: TopicModel, assigned: Counter[int]) -> str:
    lines = ["| topic_id | label | posts in fit sample | posts assigned (this run) |", "| --- | --- | --- | --- |"]
    lines += [f"| {t.topic_id} | {t.label} | {t.size} | {assigned.get(t.topic_id, 0)} |" for t in model.topics]
    return "\n".join(lines)


@asset(
    deps=["post_embeddings"],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="topics",
    description="Each eligible post's topic (nearest centroid of a stored topic model, labelled by its top "
    "c-TF-IDF terms) and cosine distance; unique on (uri, topic_model_version). Fits the model (table "
    "topic_models) on first use or when asked to refit.",
)
def post_topics(
    context: AssetExecutionContext, config: TopicsConfig, warehouse: WarehouseResource
) -> MaterializeResult:
    model, how = resolve_topic_model(warehouse, config, context.log)
    per_day: dict[str, dict[str, int]] = {}
    assigned: Counter[int] = Counter()
    for day in DayWindow.from_time_window(context.partition_time_window).days():
        stats = assign_day(warehouse, model, day)
        assigned.update(stats["by_topic"])
        per_day[day.isoformat()] = {"assigned": stats["assigned"], "without_embedding": stats["without_embedding"]}
        if stats["without_embedding"]:
            context.log.warning(
                f"{day}: {stats['without_embedding']} eligible posts have no {model.embedding_model} embedding "
                "and got no topic; materialize post_embeddings for the day first"
            )
    return MaterializeResult(
        metadata={
            "topic_model_version": model.version,
            "topic_model": how,
            "n_topics": len(model.topics),
            "dagster/row_count": sum(s["assigned"] for s in per_day.values()),
            "without_embedding": sum(s["without_embedding"] for s in per_day.values()),
            "per_day": per_day,
            "topics": MetadataValue.md(topics_markdown(model, assigned)),
        }
    )
