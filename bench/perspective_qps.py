"""How much of a Perspective quota the client really uses, against the local server enforcing it.

    python bench/perspective_qps.py --qps 50 --posts 1500 --json

Starts `tests.servers.perspective_server` with quota Q (in-process, background thread), scores N synthetic
posts with `PerspectiveResource(qps=Q)` and reports achieved QPS (posts scored per second of wall time),
utilization (achieved / quota), the 429s the server sent, and `lost` (posts without exactly one `ok`
result). Paid quota is the pipeline's bottleneck, so utilization below ~0.95 or any loss is a regression.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import synthetic_posts  # noqa: E402
from bsky_warehouse.records import ScoreResult  # noqa: E402
from bsky_warehouse.resources.perspective import PerspectiveResource  # noqa: E402
from tests.servers.perspective_server import Faults, PerspectiveServer  # noqa: E402

WORDS = ("the", "vote", "policy", "idiot", "great", "news", "today", "damn", "people", "think", "post")


def run(
    qps: float,
    n_posts: int,
    latency_s: float = 0.0,
    fault_rate: float = 0.0,
    server_qps: float | None = None,
) -> dict[str, float | int]:
    """Score `n_posts` at client `qps` against a server quota of `server_qps` (default: the same)."""
    posts = synthetic_posts(n_posts, WORDS)
    quota = server_qps or qps
    faults = Faults(rate_5xx=fault_rate)
    results: Counter[str] = Counter()
    ok: Counter[str] = Counter()

    def on_result(result: ScoreResult) -> None:
        results[result.uri] += 1
        if result.status == "ok":
            ok[result.uri] += 1

    with PerspectiveServer(quota, latency_s=latency_s, faults=faults) as server:
        resource = PerspectiveResource(api_key="test-key", base_url=server.url, qps=qps)
        started = time.monotonic()
        stats = resource.score(posts, on_result)
        elapsed = time.monotonic() - started
        server_stats = server.stats
        duplicates = sum(1 for n in server.ok_counts.values() if n > 1)
    lost = sum(1 for post in posts if ok[post.uri] != 1 or results[post.uri] != 1)
    achieved = len(posts) / elapsed if elapsed > 0 else 0.0
    return {
        "qps_quota": quota,
        "client_qps": qps,
        "posts": n_posts,
        "elapsed_s": round(elapsed, 3),
        "achieved_qps": round(achieved, 3),
        "utilization": round(achieved / quota, 4),
        "requests": stats.requests,
        "http_429": server_stats["http_429"],
        "retries": stats.retries,
        "duplicate_scores": duplicates,
        "lost": lost,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qps", type=float, default=50.0)
    parser.add_argument("--posts", type=int, default=1500)
    parser.add_argument("--server-qps", type=float, default=None, help="server quota if not --qps")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="server latency per response")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="random 5xx rate injected by the server")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    figures = run(args.qps, args.posts, args.latency_ms / 1000, args.fault_rate, args.server_qps)
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:>18}: {value}")
    return 0 if figures["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
