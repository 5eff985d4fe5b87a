"""Build `data/sample/jetstream/` from the vendored reference posts.

The reference CSV has the real text, URI, author and `created_at` of 361 posts but not the firehose
envelope, so this script writes each post as the Jetstream v1 `create` event it would have been, with a
`time_us` a few seconds after `createdAt`. It then adds what a real day of Jetstream also carries, so the
demo exercises each rule: exact duplicate events, an edit (`update`), deletes (one on the next day), an
identity and an account event, a like (another collection), and two malformed lines. Deterministic: the
same input gives byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "data" / "reference" / "pilot_posts_perspective.csv"
HAND_LABELS = ROOT / "data" / "reference" / "pilot_posts_hand_labels.csv"
OUT = ROOT / "data" / "sample" / "jetstream"
SEED = ROOT / "dbt_project" / "seeds" / "reference_hand_labels.csv"
IDEOLOGY = {"left-leaning": "left", "right-leaning": "right", "moderate": "moderate", "unclear": "unclear"}
TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"


def fake_cid(text: str) -> str:
    """A CID-shaped identifier (the CSV has none); derived from the text so it is stable."""
    digest = hashlib.sha256(text.encode()).digest()
    return "bafyrei" + "".join(TID_ALPHABET[b % 32] for b in digest)[:52]


def fake_rev(time_us: int) -> str:
    """A TID-shaped repo revision from the event time (13 base32-sortable characters)."""
    value = time_us << 10
    chars = []
    for _ in range(13):
        chars.append(TID_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def to_time_us(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000)


def post_event(row: dict[str, str], time_us: int, operation: str = "create", text: str | None = None) -> dict:
    uri = row["uri"]
    did, _, rkey = uri.removeprefix("at://").split("/", 2)
    rkey = rkey.split("/")[-1]
    body = row["text"] if text is None else text
    return {
        "did": did,
        "time_us": time_us,
        "kind": "commit",
        "commit": {
            "rev": fake_rev(time_us),
            "operation": operation,
            "collection": "app.bsky.feed.post",
            "rkey": rkey,
            "record": {
                "$type": "app.bsky.feed.post",
                "createdAt": row["created_at"],
                "langs": ["en"],
                "text": body,
            },
            "cid": fake_cid(body),
        },
    }


def main() -> None:
    rng = random.Random(20240308)
    with REFERENCE.open(newline="", encoding="utf-8") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: (r["created_at"], r["uri"]))
    lines_by_day: dict[str, list[tuple[int, str]]] = defaultdict(list)

    def emit(event: dict | str) -> None:
        line = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False, sort_keys=True)
        time_us = event["time_us"] if isinstance(event, dict) else to_time_us(datetime(2024, 3, 16, tzinfo=UTC))
        day = datetime.fromtimestamp(time_us / 1e6, UTC).date().isoformat()
        lines_by_day[day].append((time_us, line))

    created: list[tuple[dict[str, str], int]] = []
    for row in rows:
        created_at = datetime.fromisoformat(row["created_at"].replace("Z", "+00:00"))
        time_us = to_time_us(created_at + timedelta(seconds=rng.uniform(0.2, 3.0)))
        created.append((row, time_us))
        emit(post_event(row, time_us))

    # Firehose consumers see repeats after reconnects: the same event, byte for byte.
    for row, time_us in rng.sample(created, 6):
        emit(post_event(row, time_us))
    # An edit: the later record wins.
    row, time_us = created[40]
    emit(post_event(row, time_us + 90_000_000, operation="update", text=row["text"] + " (edited)"))
    # Deletes: one within the hour, one the next day.
    for (row, time_us), delay_h in zip(rng.sample(created[50:], 3), (0.5, 2, 26), strict=True):
        did, _, rest = row["uri"].removeprefix("at://").partition("/")
        delete_us = time_us + int(delay_h * 3600e6)
        emit(
            {
                "did": did,
                "time_us": delete_us,
                "kind": "commit",
                "commit": {
                    "rev": fake_rev(delete_us),
                    "operation": "delete",
                    "collection": "app.bsky.feed.post",
                    "rkey": rest.split("/")[-1],
                },
            }
        )
    row, time_us = created[10]
    did = row["uri"].removeprefix("at://").split("/")[0]
    emit(
        {
            "did": did,
            "time_us": time_us + 1,
            "kind": "identity",
            "identity": {"did": did, "handle": row["author_handle"], "seq": 1, "time": row["created_at"]},
        }
    )
    emit(
        {
            "did": did,
            "time_us": time_us + 2,
            "kind": "account",
            "account": {"active": True, "did": did, "seq": 2, "time": row["created_at"]},
        }
    )
    emit(
        {
            "did": did,
            "time_us": time_us + 3,
            "kind": "commit",
            "commit": {
                "rev": fake_rev(time_us + 3),
                "operation": "create",
                "collection": "app.bsky.feed.like",
                "rkey": "3knlike000000",
                "cid": fake_cid("like"),
                "record": {
                    "$type": "app.bsky.feed.like",
                    "createdAt": row["created_at"],
                    "subject": {"uri": created[11][0]["uri"], "cid": fake_cid("s")},
                },
            },
        }
    )
    # Two malformed lines: a truncated event and a post whose createdAt is not a timestamp.
    row, time_us = created[20]
    emit(json.dumps(post_event(row, time_us + 5), ensure_ascii=False, sort_keys=True)[:120])
    broken = post_event(row, time_us + 6)
    broken["commit"]["rkey"] = "3knbadtime000"
    broken["commit"]["record"]["createdAt"] = "yesterday afternoon"
    emit(broken)

    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.jsonl"):
        old.unlink()
    for day, lines in sorted(lines_by_day.items()):
        with (OUT / f"{day}.jsonl").open("w", encoding="utf-8") as fh:
            for _, line in sorted(lines, key=lambda item: item[0]):
                fh.write(line + "\n")
    print(f"wrote {sum(map(len, lines_by_day.values()))} events in {len(lines_by_day)} files to {OUT}")
    write_hand_label_seed({row["link"]: row["uri"] for row in rows})


def write_hand_label_seed(uri_by_link: dict[str, str]) -> None:
    """The hand labels keyed by post uri, as a dbt seed, so marts can compare labelers per day."""
    with HAND_LABELS.open(newline="", encoding="utf-8") as fh:
        labels = list(csv.DictReader(fh))
    SEED.parent.mkdir(parents=True, exist_ok=True)
    with SEED.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["uri", "link", "is_sociopolitical", "political_ideology"])
        for row in sorted(labels, key=lambda r: r["link"]):
            civic = {"civic": "true", "not civic": "false"}.get(row["civic_hand_label"].strip(), "")
            ideology = IDEOLOGY.get(row["political_ideology_hand_label"].strip(), "")
            writer.writerow([uri_by_link[row["link"]], row["link"], civic, ideology])
    print(f"wrote {len(labels)} hand labels to {SEED}")


if __name__ == "__main__":
    main()
