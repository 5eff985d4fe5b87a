"""The real Perspective scores the bluesky-research pilot got in 2024, served as a scorer.

Importing them through the same `toxicity_scores` asset as any live scorer keeps one code path: partitioned,
idempotent, and comparable to every other scorer in `scorer_agreement`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

from bsky_warehouse.project import REFERENCE_DIR
from bsky_warehouse.records import PostText, ScoreResult

REFERENCE_SCORER = "perspective-2024-reference"
# CSV column → toxicity_scores column. The pilot asked for TOXICITY and the bridging/persuasion sets.
REFERENCE_COLUMNS = {
    "prob_toxic": "prob_toxicity",
    "prob_affinity": "prob_affinity",
    "prob_compassion": "prob_compassion",
    "prob_constructive": "prob_constructive",
    "prob_curiosity": "prob_curiosity",
    "prob_nuance": "prob_nuance",
    "prob_personal_story": "prob_personal_story",
    "prob_alienation": "prob_alienation",
    "prob_fearmongering": "prob_fearmongering",
    "prob_generalization": "prob_generalization",
    "prob_moral_outrage": "prob_moral_outrage",
    "prob_scapegoating": "prob_scapegoating",
}


def parse_reference_row(row: dict[str, str]) -> dict[str, float]:
    probs = {}
    for source, column in REFERENCE_COLUMNS.items():
        value = (row.get(source) or "").strip()
        if value:
            probs[column] = float(value)
    return probs


class ReferenceScorer:
    """Looks posts up in the vendored CSV; a post it does not hold is `skipped` / `not_in_reference`."""

    name = REFERENCE_SCORER
    version = "bluesky-research-296d24b2"

    def __init__(self, path: Path = REFERENCE_DIR / "pilot_posts_perspective.csv") -> None:
        self.path = path

    @cached_property
    def scores(self) -> dict[str, dict[str, float]]:
        with self.path.open(newline="", encoding="utf-8") as fh:
            return {row["uri"]: parse_reference_row(row) for row in csv.DictReader(fh)}

    def score(self, posts: Sequence[PostText], on_result: Callable[[ScoreResult], None]) -> None:
        for post in posts:
            probs = self.scores.get(post.uri)
            if probs is None:
                on_result(ScoreResult(post.uri, "skipped", "not_in_reference"))
            else:
                on_result(ScoreResult(post.uri, "ok", None, probs))
