"""How long do embeddings and topic fits take on CPU, and how much memory? Needs the `[topics]` extra.

    python bench/topics.py --posts 5000 --json

Embeds N synthetic posts (bench/generate.py's long-tailed texts) with the packaged all-MiniLM-L6-v2, fits a
topic model over them as `post_topics` does on its sample (k-means + c-TF-IDF, default k), then assigns them
to it. Prints the model load time, embedding posts/s, fit seconds, assignment posts/s and the peak resident
memory. What to watch: embedding throughput sets how long a day of posts takes to embed (`post_embeddings`
embeds every eligible post once); the fit runs once per topic model, over `sample_size` posts.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import post_text  # noqa: E402
from bsky_warehouse.embeddings import EMBEDDING_MODEL, embed_texts, load_model  # noqa: E402
from bsky_warehouse.topics import TopicParams  # noqa: E402
from bsky_warehouse.topics_fit import fit_topic_model  # noqa: E402


def run(n_posts: int, seed: int = 0) -> dict[str, float | int]:
    rng = random.Random(seed)
    texts = [post_text(rng) for _ in range(n_posts)]
    uris = [f"at://did:plc:bench/app.bsky.feed.post/{i:08d}" for i in range(n_posts)]

    started = time.perf_counter()
    load_model()
    load_s = time.perf_counter() - started

    started = time.perf_counter()
    vectors = embed_texts(texts)
    embed_s = time.perf_counter() - started

    started = time.perf_counter()
    model = fit_topic_model(uris, texts, vectors, EMBEDDING_MODEL, TopicParams())
    fit_s = time.perf_counter() - started

    started = time.perf_counter()
    topic_ids, _ = model.assign(vectors)
    assign_s = time.perf_counter() - started

    return {
        "posts": n_posts,
        "mean_text_chars": round(sum(map(len, texts)) / n_posts, 1),
        "model_load_s": round(load_s, 2),
        "embed_s": round(embed_s, 2),
        "embed_posts_per_s": round(n_posts / embed_s, 1),
        "topics": len(model.topics),
        "fit_s": round(fit_s, 2),
        "assign_posts_per_s": round(n_posts / assign_s, 1),
        "assigned": len(topic_ids),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = run(args.posts, args.seed)
    print(json.dumps(figures) if args.json else "\n".join(f"{k}: {v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
