"""Throughput of the in-process vLLM labeler on a GPU: posts/s and tokens/s.

    python bench/vllm_offline.py --model /models/Qwen2.5-7B-Instruct --posts 2000 --json

Labels N synthetic posts with `VLLMLabelerResource` (structured outputs, temperature 0, prefix caching)
and reports wall time, posts/s, prompt and completion tokens/s, and the outcome counts. Engine start-up
(weights loading, CUDA graphs) is timed separately from labeling, since a Dagster run pays it once per
process. Exits non-zero with a clear message where vllm or a CUDA GPU is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import synthetic_posts  # noqa: E402
from bench.llm_client import WORDS  # noqa: E402
from bsky_warehouse.resources.vllm import VLLMLabelerResource, VLLMUnavailableError, require_vllm  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="local model directory")
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=1, help="posts per prompt")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        require_vllm()
    except VLLMUnavailableError as exc:
        print(f"vllm_offline: cannot run: {exc}", file=sys.stderr)
        return 2
    labeler = VLLMLabelerResource(
        model=args.model,
        batch_size=args.batch_size,
        tensor_parallel_size=args.tensor_parallel_size,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
    )
    started = time.monotonic()
    labeler.label(synthetic_posts(1, WORDS), lambda result: None)
    startup_s = time.monotonic() - started
    posts = synthetic_posts(args.posts, WORDS)
    stats = labeler.label(posts, lambda result: None)
    seconds = stats.elapsed_s
    figures = {
        "model": args.model,
        "posts": args.posts,
        "batch_size": args.batch_size,
        "startup_s": round(startup_s, 1),
        "seconds": round(seconds, 2),
        "posts_per_s": round(args.posts / seconds, 1) if seconds else None,
        "prompt_tokens_per_s": round(stats.prompt_tokens / seconds, 1) if seconds else None,
        "completion_tokens_per_s": round(stats.completion_tokens / seconds, 1) if seconds else None,
        "requests": stats.requests,
        "ok": stats.ok,
        "failed": stats.failed,
        "invalid_answers": stats.invalid_answers,
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:>24}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
