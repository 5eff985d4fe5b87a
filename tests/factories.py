"""Builders for Jetstream v1 events and archive directories used across the tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def time_us(value: str) -> int:
    return int(ts(value).timestamp() * 1_000_000)


def post_event(
    rkey: str,
    text: str = "hello bluesky",
    created_at: str = "2024-03-10T12:00:00.000Z",
    did: str = "did:plc:author1",
    operation: str = "create",
    seen_at: str | None = None,
    **record: Any,
) -> dict[str, Any]:
    return {
        "did": did,
        "time_us": time_us(seen_at or created_at) + 1000,
        "kind": "commit",
        "commit": {
            "rev": "3kabcdefghij2",
            "operation": operation,
            "collection": "app.bsky.feed.post",
            "rkey": rkey,
            "cid": f"bafyrei{rkey}",
            "record": {
                "$type": "app.bsky.feed.post",
                "text": text,
                "createdAt": created_at,
                "langs": ["en"],
                **record,
            },
        },
    }


def delete_event(rkey: str, seen_at: str, did: str = "did:plc:author1") -> dict[str, Any]:
    return {
        "did": did,
        "time_us": time_us(seen_at),
        "kind": "commit",
        "commit": {
            "rev": "3kabcdefghij3",
            "operation": "delete",
            "collection": "app.bsky.feed.post",
            "rkey": rkey,
        },
    }


def uri(rkey: str, did: str = "did:plc:author1") -> str:
    return f"at://{did}/app.bsky.feed.post/{rkey}"


def line(event: dict[str, Any] | str) -> bytes:
    return (event if isinstance(event, str) else json.dumps(event)).encode()


def write_archive(path: Path, events: list[dict[str, Any] | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for event in events:
            fh.write((event if isinstance(event, str) else json.dumps(event)) + "\n")
    return path
