"""Does the LLM client keep its concurrency busy? Measured against the local server with fixed latency.

    python bench/llm_client.py --posts 2000 --latency-ms 200 --concurrency 64 --json

Starts `tests.servers.openai_server` (in-process, background thread) answering every request after a
fixed delay, labels N synthetic posts with `OpenAILabelerResource(max_concurrency=C, batch_size=k)`, and
reports posts/s against the ceiling C·k/latency. The server runs in its own process by default (as a real
endpoint would), so its Python threads do not compete with the client's event loop for one GIL;
`--in-process` runs it in a background thread instead. With a real endpoint the latency is the model's, so a
client that cannot hold C requests in flight would waste the GPU behind it; efficiency well below ~0.9,
max_in_flight below C, or any lost post is a regression.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.generate import synthetic_posts  # noqa: E402
from bsky_warehouse.records import LabelResult  # noqa: E402
from bsky_warehouse.resources.llm import OpenAILabelerResource  # noqa: E402
from tests.servers.openai_server import OpenAIServer  # noqa: E402

WORDS = ("the", "vote", "senate", "cat", "trump", "biden", "coffee", "climate", "people", "today", "post")


@contextmanager
def server_process(latency_s: float) -> Iterator[str]:
    """`python -m tests.servers.openai_server` on a free port; yields its base URL."""
    command = [
        sys.executable,
        "-m",
        "tests.servers.openai_server",
        "--port",
        "0",
        "--latency-ms",
        str(latency_s * 1000),
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


def run(
    n_posts: int, latency_s: float, concurrency: int, batch_size: int = 1, in_process: bool = False
) -> dict[str, float | int | None]:
    posts = synthetic_posts(n_posts, WORDS)
    results: Counter[str] = Counter()
    ok: Counter[str] = Counter()

    def on_result(result: LabelResult) -> None:
        results[result.uri] += 1
        ok[result.uri] += result.status == "ok"

    def measure(base_url: str) -> tuple[float, int]:
        labeler = OpenAILabelerResource(
            base_url=base_url, model="bench", max_concurrency=concurrency, batch_size=batch_size
        )
        started = time.monotonic()
        stats = labeler.label(posts, on_result)
        return time.monotonic() - started, stats.max_in_flight

    if in_process:
        with OpenAIServer(latency_s=latency_s) as server:
            elapsed, client_peak = measure(server.base_url)
            snapshot = server.snapshot()
    else:
        with server_process(latency_s) as base_url:
            elapsed, client_peak = measure(base_url)
            snapshot = httpx.get(base_url.removesuffix("/v1") + "/_counts").json()
    max_in_flight = snapshot["max_in_flight"]
    requests = snapshot["stats"].get("requests", 0)
    lost = sum(1 for p in posts if results[p.uri] != 1 or ok[p.uri] != 1)
    expected = concurrency * batch_size / latency_s if latency_s > 0 else float("inf")
    achieved = n_posts / elapsed if elapsed > 0 else 0.0
    return {
        "posts": n_posts,
        "seconds": round(elapsed, 3),
        "posts_per_s": round(achieved, 1),
        "max_in_flight": max_in_flight,
        "configured_concurrency": concurrency,
        "expected_posts_per_s": round(expected, 1),
        "efficiency": round(achieved / expected, 3) if expected != float("inf") else None,
        "batch_size": batch_size,
        "latency_ms": latency_s * 1000,
        "requests": requests,
        "client_max_in_flight": client_peak,
        "server": "in-process" if in_process else "subprocess",
        "lost": lost,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=200.0, help="server delay per request")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--in-process", action="store_true", help="run the server in a thread, not a process")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    figures = run(args.posts, args.latency_ms / 1000, args.concurrency, args.batch_size, args.in_process)
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:>22}: {value}")
    return 0 if figures["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
