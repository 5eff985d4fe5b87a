"""Synthetic Jetstream v1 days of any size, deterministic from a seed.

Realistic enough to load-test ingest and cleaning: text lengths drawn from a long-tailed distribution capped
at the lexicon's 300 graphemes, a language mix, ~30% replies, link facets, ~1% duplicate events and ~0.5%
deletes. `python bench/generate.py --posts 100000 --day 2024-03-10 --out /tmp/day.jsonl`
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bsky_warehouse.records import PostText

WORDS = [
    "the",
    "a",
    "to",
    "of",
    "and",
    "in",
    "is",
    "it",
    "you",
    "that",
    "for",
    "on",
    "with",
    "this",
    "be",
    "are",
    "not",
    "have",
    "was",
    "but",
    "at",
    "so",
    "just",
    "like",
    "what",
    "all",
    "people",
    "think",
    "time",
    "day",
    "good",
    "new",
    "more",
    "about",
    "one",
    "out",
    "when",
    "now",
    "know",
    "get",
    "people",
    "vote",
    "policy",
    "election",
    "news",
    "love",
    "great",
    "today",
    "art",
    "cat",
    "dog",
    "coffee",
    "game",
    "music",
    "book",
    "work",
    "week",
    "thanks",
    "lol",
    "really",
    "going",
    "see",
    "make",
    "want",
]
LANGS = [(["en"], 0.78), (["ja"], 0.07), (["pt"], 0.05), (["de"], 0.03), (["es"], 0.03), (None, 0.04)]
ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"


def _rkey(rng: random.Random) -> str:
    return "3k" + "".join(rng.choice(ALPHABET) for _ in range(11))


def post_text(rng: random.Random) -> str:
    """A post's text: long-tailed length, capped at the lexicon's 300 graphemes."""
    length = min(300, max(1, int(rng.lognormvariate(4.0, 0.8))))
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < length:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:length]


def synthetic_posts(n: int, words: Sequence[str]) -> list[PostText]:
    """Distinct, deterministic texts (a word pattern and the index), so per-text server counts identify each post."""
    posts = []
    for i in range(n):
        text = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(3 + i % 9))
        posts.append(PostText(uri=f"at://did:plc:bench/app.bsky.feed.post/{i:08d}", text=f"{text} #{i}"))
    return posts


def events(day: date, posts: int, seed: int = 0) -> Iterator[dict]:
    """Yield `posts` create events (plus duplicates and deletes) spread over the UTC day, in time order."""
    rng = random.Random(seed)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    step = 86_400 / max(posts, 1)
    authors = [f"did:plc:{''.join(rng.choice(ALPHABET) for _ in range(24))}" for _ in range(max(posts // 20, 1))]
    recent: list[tuple[str, str]] = []
    for i in range(posts):
        created = start + timedelta(seconds=i * step + rng.random() * step)
        did = rng.choice(authors)
        rkey = _rkey(rng)
        record: dict = {"$type": "app.bsky.feed.post", "createdAt": created.isoformat().replace("+00:00", "Z"),
                        "text": post_text(rng)}  # fmt: skip
        langs = rng.choices([lang for lang, _ in LANGS], [w for _, w in LANGS])[0]
        if langs:
            record["langs"] = langs
        if recent and rng.random() < 0.3:
            parent = rng.choice(recent)
            ref = {"uri": f"at://{parent[0]}/app.bsky.feed.post/{parent[1]}", "cid": "bafyreiparent"}
            record["reply"] = {"parent": ref, "root": ref}
        if rng.random() < 0.1:
            record["text"] += " https://example.org/a"
            link = {"$type": "app.bsky.richtext.facet#link", "uri": "https://example.org/a"}
            record["facets"] = [{"index": {"byteStart": 0, "byteEnd": 1}, "features": [link]}]
        time_us = int((created + timedelta(seconds=rng.random() * 2)).timestamp() * 1_000_000)
        event = {"did": did, "time_us": time_us, "kind": "commit",
                 "commit": {"rev": rkey, "operation": "create", "collection": "app.bsky.feed.post",
                            "rkey": rkey, "cid": "bafyrei" + rkey, "record": record}}  # fmt: skip
        yield event
        if rng.random() < 0.01:
            yield event
        if rng.random() < 0.005 and recent:
            victim = rng.choice(recent)
            yield {"did": victim[0], "time_us": time_us + 1, "kind": "commit",
                   "commit": {"rev": rkey, "operation": "delete", "collection": "app.bsky.feed.post",
                              "rkey": victim[1]}}  # fmt: skip
        recent.append((did, rkey))
        if len(recent) > 1000:
            recent.pop(0)


def write_day(path: Path, day: date, posts: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for event in events(day, posts, seed):
            fh.write(json.dumps(event, separators=(",", ":")) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, required=True)
    parser.add_argument("--day", default="2024-03-10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    write_day(Path(args.out), date.fromisoformat(args.day), args.posts, args.seed)


if __name__ == "__main__":
    main()
