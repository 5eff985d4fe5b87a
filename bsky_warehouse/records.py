"""Records exchanged between the scoring/labeling backends and the assets that persist them.

Backends never touch DuckDB: they take `PostText`s and report one result per post through a callback as
soon as it is known, so the asset can checkpoint it durably before the next paid call returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Status = Literal["ok", "failed", "skipped"]

# Perspective attribute names as the API spells them, in the order of the `toxicity_scores` columns.
PERSPECTIVE_PRODUCTION = (
    "TOXICITY",
    "SEVERE_TOXICITY",
    "IDENTITY_ATTACK",
    "INSULT",
    "PROFANITY",
    "THREAT",
)
PERSPECTIVE_EXPERIMENTAL = ("SEXUALLY_EXPLICIT", "FLIRTATION")
PERSPECTIVE_BRIDGING = (
    "AFFINITY_EXPERIMENTAL",
    "COMPASSION_EXPERIMENTAL",
    "CONSTRUCTIVE_EXPERIMENTAL",
    "CURIOSITY_EXPERIMENTAL",
    "NUANCE_EXPERIMENTAL",
    "PERSONAL_STORY_EXPERIMENTAL",
    "REASONING_EXPERIMENTAL",
    "RESPECT_EXPERIMENTAL",
)
PERSPECTIVE_PERSUASION = (
    "ALIENATION_EXPERIMENTAL",
    "FEARMONGERING_EXPERIMENTAL",
    "GENERALIZATION_EXPERIMENTAL",
    "MORAL_OUTRAGE_EXPERIMENTAL",
    "POWER_APPEAL_EXPERIMENTAL",
    "SCAPEGOATING_EXPERIMENTAL",
)
PERSPECTIVE_SPAM = ("SPAM",)
PERSPECTIVE_ATTRIBUTES = (
    PERSPECTIVE_PRODUCTION + PERSPECTIVE_EXPERIMENTAL + PERSPECTIVE_BRIDGING + PERSPECTIVE_PERSUASION + PERSPECTIVE_SPAM
)


def prob_column(attribute: str) -> str:
    """`AFFINITY_EXPERIMENTAL` -> `prob_affinity`: the table column for a Perspective attribute."""
    name = attribute.lower()
    if name.endswith("_experimental"):
        name = name[: -len("_experimental")]
    return f"prob_{name}"


PROB_COLUMNS = tuple(prob_column(a) for a in PERSPECTIVE_ATTRIBUTES)

IDEOLOGIES = ("left", "right", "moderate", "unclear")


@dataclass(frozen=True)
class PostText:
    """What a backend needs to know about one post."""

    uri: str
    text: str
    langs: tuple[str, ...] = ()


@dataclass
class ScoreResult:
    """One post's toxicity outcome. `probs` is keyed by `prob_*` column; absent attributes are NULL."""

    uri: str
    status: Status
    reason: str | None = None
    probs: dict[str, float] = field(default_factory=dict)


@dataclass
class LabelResult:
    """One post's sociopolitical label. `political_ideology` is set only when `is_sociopolitical`.

    `dropped_ideology`: an ideology a label file recorded for a post it called not sociopolitical, which the
    answer rule keeps out of `political_ideology` (the 2024 pilot's Llama-3 fill its ideology column with
    `unclear` there). Kept so the evaluation can also report the figure over every post both sources gave an
    ideology (`ideology_both_labelled`); never an answer."""

    uri: str
    status: Status
    reason: str | None = None
    is_sociopolitical: bool | None = None
    political_ideology: str | None = None
    rationale: str | None = None
    dropped_ideology: str | None = None


class Scorer(Protocol):
    """A toxicity backend. `version` changes whenever its outputs could change."""

    name: str
    version: str

    def score(self, posts: Sequence[PostText], on_result: Callable[[ScoreResult], None]) -> None: ...


class Labeler(Protocol):
    """A sociopolitical labeling backend, identified by (name, model, prompt_version)."""

    name: str
    model: str
    prompt_version: str

    def label(self, posts: Sequence[PostText], on_result: Callable[[LabelResult], None]) -> None: ...
