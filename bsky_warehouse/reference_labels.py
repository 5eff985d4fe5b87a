"""The recorded GPT-4 and Llama-3 labels of the 2024 pilot, as import labelers.

The pilot's files key posts by bsky.app links with handles; the vendored Perspective CSV holds each post's
handle and uri, which gives the handle → DID map the import needs.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

from bsky_warehouse.project import REFERENCE_DIR

RECORDED_LABELS = REFERENCE_DIR / "pilot_posts_llm_labels.csv"
RECORDED_PROMPT_VERSION = "bluesky-research-2024"
# model name → (sociopolitical column, ideology column) in pilot_posts_llm_labels.csv
RECORDED_MODELS = {
    "gpt-4": ("gpt4_civic_label", "gpt4_political_label"),
    "llama-3-8b": ("llama3-8b_civic_label", "llama3-8b_political_label"),
    "llama-3-70b": ("llama3-70b_civic_label", "llama3-70b_political_label"),
}


@cache
def reference_handle_to_did(path: Path = REFERENCE_DIR / "pilot_posts_perspective.csv") -> dict[str, str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["author_handle"]: row["uri"].removeprefix("at://").split("/")[0] for row in csv.DictReader(fh)}


def handle_map_from_csv(path: str) -> dict[str, str]:
    """A handle → DID map from a CSV with `handle` and `did` columns, or with `link` and `uri` columns."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and {"handle", "did"} <= rows[0].keys():
        return {r["handle"]: r["did"] for r in rows}
    if rows and {"link", "uri"} <= rows[0].keys():
        return {
            r["link"].split("/profile/")[1].split("/")[0]: r["uri"].removeprefix("at://").split("/")[0] for r in rows
        }
    raise ValueError(f"{path}: need columns handle,did or link,uri")
