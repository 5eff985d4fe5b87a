"""Spend the last of the Perspective quota where it teaches the distilled scorer most.

Perspective stops answering after 31 December 2026. A project with 1 QPS cannot score the whole firehose
before then, so `bsky-warehouse perspective plan` works out how many posts the quota still allows and which
to send, and stores that sample (`perspective_plan`); `toxicity_scores` with scorer `perspective` and
`sample: planned` then scores only the planned posts of each day.

- **Quota**: `floor(qps × seconds from now to the end of --until (UTC) × (1 − margin))` posts, one request a
  post. The margin (default 10%) is held back for what the quota pays for besides a first request: retries
  after 429s, 5xx and timeouts, the language fallbacks of non-English posts, and hours the pipeline is not
  running.
- **Candidates**: eligible posts (cleaned, passing the filters) without a `perspective` score; a post whose
  only `perspective` row is a retryable failure (`api_error`) never got a score and is a candidate again.
- **Strata**: (day, primary language; `und` when none). The budget is shared among strata in proportion to
  their candidates (largest remainders; every stratum gets one post first when the budget has room for one
  each), so the training set keeps the days and languages the warehouse holds.
- **Weights**: within a stratum, posts are drawn with probability proportional to
  `min_weight + (1 − min_weight) × 4p(1 − p)`, where `p` is the current distilled model's TOXICITY for the post
  (its out-of-fold prediction when the post is one of the model's training posts, since the refitted model's
  own score of those is in-sample). `4p(1 − p)` is the Bernoulli variance of a label the model calls `p`
  (1 at 0.5, falling to 0 at either end): the posts whose side of 0.5 the model is least sure of, which is
  what its share ≥ 0.5 and ROC AUC figures hinge on. The floor keeps every post's chance positive (the model
  learns the confident regions too, and no sampling weight exceeds 1 / min_weight times another). A post the
  model has no prediction for (no model fitted, no embedding yet) gets weight 1: nothing is known about it.
  Fold disagreement was the alternative; the warehouse keeps the folds' predictions only for training posts,
  not the fold models, so it cannot be computed for the posts a plan is about.
- **Design**: systematic probability-proportional-to-size sampling in a seeded pseudo-random order, with
  probabilities above 1 capped and the rest rescaled. Each planned post's exact inclusion probability is
  stored and copied onto the scored row (record_inclusion), so the daily marts and the bridge weight the
  planned sample back to the day (Hájek, weight 1 / inclusion_probability) instead of over-representing
  borderline posts.
- **Reproducible**: the order and the start are hashes of the seed and the uri / stratum, not a generator's
  stream, so the same candidates, weights, budget and seed give the same sample (and the same `plan_id`, a
  digest of those) whatever order the posts are read in.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

import duckdb

ALGORITHM = "pps-systematic-v1"
PERSPECTIVE_LAST_DAY = date(2026, 12, 31)
DEFAULT_MARGIN = 0.1
DEFAULT_MIN_WEIGHT = 0.1
DEFAULT_SEED = 0
PLAN_ATTRIBUTE = "prob_toxicity"
UNKNOWN_LANG = "und"
PERSPECTIVE = "perspective"
# How a planned post's weight came about (perspective_plan.reason).
REASON_OUT_OF_FOLD = "out_of_fold_prediction"
REASON_PREDICTION = "distilled_prediction"
REASON_NO_PREDICTION = "no_prediction"

K = TypeVar("K", bound=Hashable)


class PlanError(ValueError):
    """A plan cannot be made from these arguments (the message is one line, fit for the command line)."""


# Quota ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quota:
    """What the quota allows between `now` and the end of the `until` day (UTC)."""

    qps: float
    until: date
    now: datetime
    margin: float

    @property
    def deadline(self) -> datetime:
        return datetime.combine(self.until + timedelta(days=1), time(), tzinfo=UTC)

    @property
    def seconds(self) -> float:
        return max(0.0, (self.deadline - self.now).total_seconds())

    @property
    def requests(self) -> int:
        """Requests the quota admits in the time left, at one per 1 / qps seconds."""
        return math.floor(self.qps * self.seconds)

    @property
    def posts(self) -> int:
        """Posts to plan: the requests less the margin held back for retries, fallbacks and downtime."""
        return math.floor(self.qps * self.seconds * (1.0 - self.margin))

    def as_dict(self) -> dict[str, Any]:
        return {
            "qps": self.qps,
            "until": self.until.isoformat(),
            "now": self.now.isoformat(),
            "deadline": self.deadline.isoformat(),
            "seconds": self.seconds,
            "margin": self.margin,
            "requests": self.requests,
            "posts": self.posts,
        }


def parse_quota(qps: str, until: str, now: datetime, margin: float = DEFAULT_MARGIN) -> Quota:
    """The command line's --qps / --until / --margin checked before anything opens the warehouse: each problem
    is one line naming the option, so a typo costs nothing."""
    try:
        rate = float(qps)
    except ValueError:
        raise PlanError(f"--qps {qps!r} is not a number (requests per second, e.g. 1 or 0.5)") from None
    if not math.isfinite(rate) or rate <= 0:
        raise PlanError(f"--qps must be a positive number of requests per second, not {qps!r}")
    try:
        last = date.fromisoformat(until)
    except ValueError:
        raise PlanError(f"--until {until!r} is not a date (YYYY-MM-DD)") from None
    if last > PERSPECTIVE_LAST_DAY:
        raise PlanError(f"--until {last} is after {PERSPECTIVE_LAST_DAY}, when Perspective stops answering")
    if not 0 <= margin < 1:
        raise PlanError(f"--margin must be at least 0 and below 1, not {margin}")
    if now.tzinfo is None:
        raise PlanError("the current time must carry a time zone")
    quota = Quota(rate, last, now.astimezone(UTC), margin)
    if quota.seconds <= 0:
        raise PlanError(
            f"--until {last} is over: it ended at {quota.deadline.isoformat()}, it is now {now.isoformat()}"
        )
    return quota


def parse_now(value: str | None, current: datetime) -> datetime:
    """--now (an ISO time, UTC when it names no zone) to reproduce a plan; `current` when not given."""
    if value is None:
        return current
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PlanError(f"--now {value!r} is not an ISO time (e.g. 2026-12-01T12:00:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# Sampling ---------------------------------------------------------------------------------------------------


def uncertainty_weight(prediction: float | None, min_weight: float = DEFAULT_MIN_WEIGHT) -> float:
    """`min_weight + (1 − min_weight) × 4p(1 − p)`; 1 when the model has no prediction."""
    if prediction is None or not math.isfinite(prediction):
        return 1.0
    p = min(1.0, max(0.0, prediction))
    return min_weight + (1.0 - min_weight) * 4.0 * p * (1.0 - p)


def allocate(sizes: Mapping[K, int], budget: int) -> dict[K, int]:
    """Posts per stratum: one each first when the budget has room for every stratum, the rest in proportion to
    what is left of each (largest remainders; ties to the larger stratum, then the smaller key). Never more
    than a stratum holds; everything when the budget covers all."""
    keys = sorted(sizes, key=repr)
    if budget >= sum(sizes.values()):
        return {k: sizes[k] for k in keys}
    base = {k: min(1, sizes[k]) if budget >= len(keys) else 0 for k in keys}
    room = {k: sizes[k] - base[k] for k in keys}
    rest = max(0, budget - sum(base.values()))
    total = sum(room.values())
    if rest == 0 or total == 0:
        return base
    quotas = {k: rest * room[k] / total for k in keys}
    out = {k: base[k] + math.floor(quotas[k]) for k in keys}
    left = budget - sum(out.values())
    ranked = sorted(keys, key=lambda k: (-(quotas[k] - math.floor(quotas[k])), -sizes[k], repr(k)))
    for k in ranked[:left]:
        out[k] += 1
    return out


def unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from the seed and a key: the same for the same pair, on any machine."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def inclusion_probabilities(weights: Sequence[float], k: int) -> list[float]:
    """Probabilities proportional to `weights` that sum to `k`, each capped at 1 (the capped ones are taken
    for certain and the rest rescaled over what remains)."""
    n = len(weights)
    if k >= n:
        return [1.0] * n
    if k <= 0:
        return [0.0] * n
    if any(not (w > 0 and math.isfinite(w)) for w in weights):
        raise PlanError("sampling weights must be positive and finite")
    certain: set[int] = set()
    while True:
        rest = [i for i in range(n) if i not in certain]
        total = sum(weights[i] for i in rest)
        share = k - len(certain)
        over = {i for i in rest if share * weights[i] / total >= 1.0}
        if not over:
            break
        certain |= over
    return [1.0 if i in certain else share * weights[i] / total for i in range(n)]


def systematic_sample(keys: Sequence[str], probabilities: Sequence[float], seed: int, start_key: str) -> list[int]:
    """Indexes drawn by systematic sampling: units in the order of `unit_hash(seed, key)`, laid end to end as
    intervals of their probability, hit by the points u, u + 1, … (u = `unit_hash(seed, start_key)`). A unit
    with probability p is drawn with probability exactly p; those at 1 are taken outright."""
    certain = [i for i, p in enumerate(probabilities) if p >= 1.0]
    rest = sorted(
        (i for i, p in enumerate(probabilities) if 0 < p < 1.0), key=lambda i: (unit_hash(seed, keys[i]), keys[i])
    )
    target = round(sum(probabilities[i] for i in rest))
    start = unit_hash(seed, start_key)
    drawn: list[int] = []
    cumulative = 0.0
    for position, i in enumerate(rest):
        lower = cumulative
        cumulative = float(target) if position == len(rest) - 1 else cumulative + probabilities[i]
        if math.ceil(cumulative - start) > math.ceil(lower - start):
            drawn.append(i)
    return sorted(certain + drawn)


@dataclass(frozen=True)
class Candidate:
    """An eligible post without a Perspective score, with what the distilled model thinks of it."""

    uri: str
    day: date
    lang: str
    prediction: float | None = None
    out_of_fold: bool = False


@dataclass(frozen=True)
class PlannedPost:
    uri: str
    day: date
    lang: str
    weight: float
    inclusion_probability: float
    prediction: float | None
    reason: str


@dataclass(frozen=True)
class Stratum:
    day: date
    lang: str
    candidates: int
    planned: int


@dataclass(frozen=True)
class PlanParams:
    """What a plan depends on besides its candidates; all of it goes into the plan_id."""

    budget: int
    seed: int = DEFAULT_SEED
    min_weight: float = DEFAULT_MIN_WEIGHT
    attribute: str = PLAN_ATTRIBUTE
    distilled_version: str | None = None


@dataclass
class Plan:
    plan_id: str
    params: PlanParams
    posts: list[PlannedPost]
    strata: list[Stratum] = field(default_factory=list)
    candidates: int = 0


def weight_reason(candidate: Candidate) -> str:
    if candidate.prediction is None:
        return REASON_NO_PREDICTION
    return REASON_OUT_OF_FOLD if candidate.out_of_fold else REASON_PREDICTION


def plan_id(candidates: Iterable[Candidate], params: PlanParams) -> str:
    """Digest of the algorithm, the parameters and the candidates (in uri order): same inputs, same plan."""
    digest = hashlib.sha256(json.dumps({"algorithm": ALGORITHM, **asdict(params)}, sort_keys=True).encode())
    for c in sorted(candidates, key=lambda c: c.uri):
        digest.update(f"{c.uri}\t{c.day.isoformat()}\t{c.lang}\t{c.prediction!r}\t{c.out_of_fold}\n".encode())
    return f"plan-{digest.hexdigest()[:16]}"


def plan_sample(candidates: Sequence[Candidate], params: PlanParams) -> Plan:
    """The stratified, uncertainty-weighted sample of `params.budget` posts (all of them when they fit)."""
    if not 0 < params.min_weight <= 1:
        raise PlanError(f"min_weight must be above 0 and at most 1, not {params.min_weight}")
    if params.budget < 0:
        raise PlanError(f"the budget must not be negative, not {params.budget}")
    strata: dict[tuple[date, str], list[Candidate]] = {}
    for c in sorted(candidates, key=lambda c: c.uri):
        strata.setdefault((c.day, c.lang), []).append(c)
    takes = allocate({key: len(members) for key, members in strata.items()}, params.budget)
    posts: list[PlannedPost] = []
    summary: list[Stratum] = []
    for (day, lang), members in sorted(strata.items()):
        weights = [uncertainty_weight(c.prediction, params.min_weight) for c in members]
        probabilities = inclusion_probabilities(weights, takes[(day, lang)])
        drawn = systematic_sample([c.uri for c in members], probabilities, params.seed, f"{day}\x00{lang}")
        for i in drawn:
            c = members[i]
            posts.append(PlannedPost(c.uri, day, lang, weights[i], probabilities[i], c.prediction, weight_reason(c)))
        summary.append(Stratum(day, lang, len(members), len(drawn)))
    return Plan(plan_id(candidates, params), params, posts, summary, len(candidates))


# The warehouse ----------------------------------------------------------------------------------------------


def load_candidates(con: duckdb.DuckDBPyConnection, distilled_version: str | None) -> list[Candidate]:
    """Eligible posts with no Perspective score yet, each with the distilled model's TOXICITY: its out-of-fold
    prediction for a training post, else the model's stored score, else none."""
    from bsky_warehouse.checkpoint import not_retryable_sql
    from bsky_warehouse.distill import SCORER_NAME

    rows = con.execute(
        f"""SELECT c.uri, c.partition_date, coalesce(nullif(c.lang_primary, ''), $und),
                   coalesce(o.prediction, d.{PLAN_ATTRIBUTE}), o.prediction IS NOT NULL
            FROM cleaned_posts c
            LEFT JOIN distilled_oof_predictions o
              ON o.uri = c.uri AND o.model_version = $version AND o.attribute = $attribute
            LEFT JOIN toxicity_scores d
              ON d.uri = c.uri AND d.scorer = $distilled AND d.scorer_version = $version AND d.status = 'ok'
            WHERE c.passes_filters
              AND c.uri NOT IN (SELECT uri FROM toxicity_scores WHERE scorer = $perspective{not_retryable_sql(True)})
            ORDER BY c.uri""",
        {"und": UNKNOWN_LANG, "version": distilled_version, "attribute": PLAN_ATTRIBUTE, "distilled": SCORER_NAME,
         "perspective": PERSPECTIVE},
    ).fetchall()  # fmt: skip
    return [Candidate(uri, day, lang, None if p is None else float(p), bool(oof)) for uri, day, lang, p, oof in rows]


def already_scored(con: duckdb.DuckDBPyConnection) -> int:
    """Eligible posts Perspective has answered for (never planned again)."""
    from bsky_warehouse.checkpoint import not_retryable_sql

    return con.execute(
        f"""SELECT count(*) FROM cleaned_posts WHERE passes_filters
            AND uri IN (SELECT uri FROM toxicity_scores WHERE scorer = $p{not_retryable_sql(True)})""",
        {"p": PERSPECTIVE},
    ).fetchall()[0][0]


def store_plan(con: duckdb.DuckDBPyConnection, plan: Plan, created_at: datetime, context: Mapping[str, Any]) -> int:
    """Replace the rows of this plan_id (the same inputs planned again) and return how many went in. `context`
    (the quota) is stored beside the parameters in `params`."""
    import pandas as pd

    from bsky_warehouse.resources.warehouse import insert_rows, transaction

    params = json.dumps({**asdict(plan.params), "algorithm": ALGORITHM, **context}, sort_keys=True, default=str)
    frame = pd.DataFrame(
        {
            "uri": [p.uri for p in plan.posts],
            "partition_date": [p.day for p in plan.posts],
            "lang": [p.lang for p in plan.posts],
            "weight": [p.weight for p in plan.posts],
            "inclusion_probability": [p.inclusion_probability for p in plan.posts],
            "prediction": pd.array([p.prediction for p in plan.posts], dtype="Float64"),
            "reason": [p.reason for p in plan.posts],
        }
    )
    frame["plan_id"] = plan.plan_id
    frame["created_at"] = created_at
    frame["distilled_version"] = plan.params.distilled_version
    frame["params"] = params
    with transaction(con):
        con.execute("DELETE FROM perspective_plan WHERE plan_id = $id", {"id": plan.plan_id})
        return insert_rows(con, "perspective_plan", frame)


def latest_plan_id(con: duckdb.DuckDBPyConnection) -> str | None:
    """The most recently stored plan (ties: the greater id, so the answer never wavers)."""
    row = con.execute("SELECT plan_id FROM perspective_plan ORDER BY created_at DESC, plan_id DESC LIMIT 1").fetchone()
    return row[0] if row else None


def stored_plan_ids(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute("SELECT DISTINCT plan_id FROM perspective_plan ORDER BY 1").fetchall()]


def planned_uris(con: duckdb.DuckDBPyConnection, plan: str, day: date) -> set[str]:
    """The plan's posts that `day` owns now (by uri: a post another day took over since is that day's)."""
    rows = con.execute(
        """SELECT p.uri FROM perspective_plan p JOIN cleaned_posts c ON c.uri = p.uri
           WHERE p.plan_id = $id AND c.partition_date = $day""",
        {"id": plan, "day": day},
    ).fetchall()
    return {r[0] for r in rows}


def record_inclusion(con: duckdb.DuckDBPyConnection, scorer: str, plan: str | None, day: date) -> int:
    """Set each of the scorer's rows of `day` to the probability with which its post entered the day's sample,
    the weight (its inverse) the daily marts and the bridge give it.

    A run of the whole day (`plan` None) makes the day a census: every row 1. A run of a plan gives its posts
    the plan's probabilities and every other row of the day 1: a plan samples only the posts Perspective had
    not scored when it was drawn, so the ones scored before stand for themselves, not for others (the estimate
    of a day is then the scored posts plus the plan's sample of the rest; this holds when a plan is drawn after
    the earlier runs it follows, the order the README gives). Rows already right are not written; returns how
    many were.
    """
    if plan is None:
        (changed,) = con.execute(
            """UPDATE toxicity_scores SET inclusion_probability = 1.0
               WHERE scorer = $scorer AND partition_date = $day
                 AND inclusion_probability IS DISTINCT FROM 1.0""",
            {"scorer": scorer, "day": day},
        ).fetchone()
        return changed
    (changed,) = con.execute(
        """UPDATE toxicity_scores AS t SET inclusion_probability = w.probability
           FROM (
               SELECT s.uri, coalesce(p.inclusion_probability, 1.0) AS probability
               FROM toxicity_scores s
               LEFT JOIN perspective_plan p ON p.plan_id = $plan AND p.uri = s.uri
               WHERE s.scorer = $scorer AND s.partition_date = $day
           ) AS w
           WHERE t.scorer = $scorer AND t.partition_date = $day AND t.uri = w.uri
             AND t.inclusion_probability IS DISTINCT FROM w.probability""",
        {"scorer": scorer, "day": day, "plan": plan},
    ).fetchone()
    return changed


def plan_summary(plan: Plan, quota: Quota, scored: int, stored: int) -> dict[str, Any]:
    """What `bsky-warehouse perspective plan --json` prints: the quota, the plan and its posts."""
    return {
        "plan_id": plan.plan_id,
        "quota": quota.as_dict(),
        "posts_allowed": quota.posts,
        "candidates": plan.candidates,
        "already_scored_by_perspective": scored,
        "planned": len(plan.posts),
        "stored_rows": stored,
        "seed": plan.params.seed,
        "min_weight": plan.params.min_weight,
        "attribute": plan.params.attribute,
        "distilled_version": plan.params.distilled_version,
        "weighting": "min_weight + (1 - min_weight) * 4p(1-p) of the distilled TOXICITY p; 1 without a prediction",
        "strata": [{**asdict(s), "day": s.day.isoformat()} for s in plan.strata],
        "posts": [{**asdict(p), "day": p.day.isoformat()} for p in plan.posts],
    }
