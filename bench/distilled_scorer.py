"""How fast does `perspective-distilled` score posts whose embeddings are already stored?

    python bench/distilled_scorer.py --posts 50000 --json

Writes N synthetic posts' embeddings (random unit vectors: the scorer reads stored vectors and never embeds, so
their values do not change its cost) into a temporary warehouse's `post_embeddings`, fits a distilled model with
every reference attribute on a small synthetic training set, and times `DistilledScorer.score` over the posts
(bench/generate.py's long-tailed texts) exactly as the `toxicity_scores` asset calls it: each batch's embeddings
read through `WarehouseResource.connect()`, the text features computed, every head applied. Prints posts/s for
the whole and for its parts. The target is 2,000 posts/s once embeddings exist.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import post_text  # noqa: E402
from bsky_warehouse.assets.distill import fetch_embeddings  # noqa: E402
from bsky_warehouse.distill import DistillParams, TrainingSet, text_features  # noqa: E402
from bsky_warehouse.distill_fit import fit_distilled  # noqa: E402
from bsky_warehouse.records import PostText  # noqa: E402
from bsky_warehouse.reference import REFERENCE_COLUMNS  # noqa: E402
from bsky_warehouse.resources.warehouse import WarehouseResource  # noqa: E402
from bsky_warehouse.schema import EMBEDDING_DIM  # noqa: E402
from bsky_warehouse.scorers import DistilledScorer  # noqa: E402

MODEL = "bench-embeddings"


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.normal(size=(n, EMBEDDING_DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def synthetic_model(rng: np.random.Generator, texts: list[str]):
    """A model with the reference's twelve attributes, fitted on 200 synthetic rows (its cost to score does not
    depend on what it learnt)."""
    n = 200
    vectors = unit_rows(rng, n)
    columns = sorted(set(REFERENCE_COLUMNS.values()))
    targets = {c: rng.uniform(0.01, 0.99, n) for c in columns}
    training = TrainingSet(
        [f"at://did:plc:train/app.bsky.feed.post/{i:05d}" for i in range(n)],
        vectors,
        text_features(texts[:n]),
        targets,
        {c: ["synthetic"] * n for c in columns},
    )
    anchors = unit_rows(rng, 8)
    model, _ = fit_distilled(training, DistillParams(family="ridge-embeddings", folds=2), MODEL, ["synthetic"], anchors)
    return model


def run(n_posts: int, batch_size: int, seed: int = 0) -> dict[str, float | int]:
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    texts = [post_text(rng) for _ in range(n_posts)]
    uris = [f"at://did:plc:bench/app.bsky.feed.post/{i:08d}" for i in range(n_posts)]
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = WarehouseResource(path=str(Path(tmp) / "bench.duckdb"))
        frame = pd.DataFrame({"uri": uris, "embedding": list(unit_rows(np_rng, n_posts))})
        frame["embedding_model"] = MODEL
        frame["embedded_at"] = datetime.now(UTC)
        frame["partition_date"] = date(2024, 3, 10)
        with warehouse.connect() as con:
            con.register("bench_frame", frame)
            con.execute("INSERT INTO post_embeddings BY NAME SELECT * FROM bench_frame")
            con.unregister("bench_frame")
        model = synthetic_model(np_rng, texts)

        def embeddings(wanted: list[str]) -> dict:
            with warehouse.connect() as con:
                return fetch_embeddings(con, MODEL, wanted)

        posts = [PostText(uri, text) for uri, text in zip(uris, texts, strict=True)]
        scored = []
        started = time.perf_counter()
        stats = DistilledScorer(model, embeddings, batch_size=batch_size).score(posts, scored.append)
        score_s = time.perf_counter() - started

        started = time.perf_counter()
        for start in range(0, n_posts, batch_size):
            embeddings(uris[start : start + batch_size])
        lookup_s = time.perf_counter() - started
    started = time.perf_counter()
    features = text_features(texts)
    features_s = time.perf_counter() - started
    vectors = unit_rows(np_rng, n_posts)
    started = time.perf_counter()
    model.predict(vectors, features)
    predict_s = time.perf_counter() - started
    ok = sum(r.status == "ok" for r in scored)
    return {
        "posts": n_posts,
        "attributes": len(model.heads),
        "batch_size": batch_size,
        "scored_ok": ok,
        "without_embedding": stats["without_embedding"],
        "score_s": round(score_s, 3),
        "posts_per_s": round(n_posts / score_s, 1),
        "embedding_lookup_posts_per_s": round(n_posts / lookup_s, 1),
        "text_features_posts_per_s": round(n_posts / features_s, 1),
        "heads_posts_per_s": round(n_posts / predict_s, 1),
        "target_posts_per_s": 2000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.posts, args.batch_size)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>30}: {value}")


if __name__ == "__main__":
    main()
