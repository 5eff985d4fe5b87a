"""A distilled Perspective: per-attribute linear models fitted on the Perspective scores the warehouse holds.

Perspective stops answering after 2026, but the warehouse keeps every score it gave (live `perspective` rows,
and the vendored 2024 reference). `perspective-distilled` learns each attribute from those scores on features
that cost nothing extra at scoring time:

- the post's stored all-MiniLM-L6-v2 embedding (`post_embeddings`, computed once per post, shared with topics);
- cheap text features: alt-profanity-check's probability (as a logit) and, from the same shipped linear SVM,
  its margin, the summed positive / negative and the strongest term contributions, how many of its strongest
  terms (insults, slurs, swear words) the text holds and the largest term weight present (both blind to the
  tf-idf scaling, which dilutes one slur in a long post); log length, share of capitals, `!` and `?` counts
  and second-person words;
- the embedding's cosine similarity to a few fixed anchor texts (Perspective's attribute descriptions,
  paraphrased, and short insult / profanity phrases), embedded once per fit with the same model.

Model: ridge regression on the attribute's logit, so predictions map back through a sigmoid into (0, 1); the
target is clipped to [0.01, 0.99] first, so differences among scores Perspective itself puts near zero (its
TOXICITY goes down to 0.0006) do not get the leverage of logits down to -7. The embedding columns enter as
they are (unit vectors); the other columns are standardized and multiplied by a weight, which sets how strongly
the shared ridge penalty shrinks them. The weight is chosen by an inner 5-fold CV (Spearman of the pooled inner
predictions), the ridge penalty (33 values, 1e-3 to 1e5) by RidgeCV's leave-one-out on the same training rows;
the outer 5-fold CV that reports the figures refits all of it inside each fold (nested CV).
Measured alternatives (kernel ridge, SVR, gradient boosting, kNN, PLS) were no better on the 361 reference
posts; see the README. Anchor similarities are linear in the embedding, so a fitted pipeline folds into one
linear head per attribute (384 embedding weights, a few text weights, an intercept): scoring is two matrix
products and needs neither the anchors nor scikit-learn's objects, and the stored coefficients are the model.

Version: a digest of the algorithm, the parameters, the embedding model, the feature spec (profanity-check's
version, the anchor texts and their embeddings) and the training data (uris, targets, their scorer, texts'
features and embeddings), so the same fit over the same data is the same version and anything else a new one.

This module holds the model as stored and applied (features, heads, the training set) and imports no
scikit-learn: the scorer, the bridge and every Dagster step process import it. The fitting, which needs
scikit-learn, is in distill_fit.py.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bsky_warehouse.metrics import pearson, roc_auc, spearman
from bsky_warehouse.records import PROB_COLUMNS, prob_column
from bsky_warehouse.reference import REFERENCE_SCORER

SCORER_NAME = "perspective-distilled"
ALGORITHM = "distill-ridge-v2"
DEFAULT_TRAINING_SCORERS = ("perspective", REFERENCE_SCORER)
MIN_TRAINING_POSTS = 40
POSITIVE_AT = 0.5
LOGIT_CLIP = 1e-4
TARGET_CLIP = 0.01
# Profanity-check's terms weighted above this in its SVM: about 150 insults, slurs and swear words.
STRONG_TERM_WEIGHT = 2.0
# Extra-feature weights each family searches; 0 leaves the embedding alone (the family `ridge-embeddings`).
FAMILIES: Mapping[str, tuple[float, ...]] = {"ridge": (0.1, 0.2, 0.4, 0.8), "ridge-embeddings": (0.0,)}
ALPHAS = tuple(float(a) for a in np.logspace(-3, 5, 33))

TEXT_FEATURES = (
    "profanity_logit",
    "profanity_margin",
    "profane_terms",
    "clean_terms",
    "strongest_term",
    "strong_terms",
    "strongest_weight",
    "log_length",
    "caps_share",
    "exclamations",
    "questions",
    "second_person",
)
SECOND_PERSON = re.compile(r"\b(?:you|your|youre|you're|yours|yourself|u|ur)\b", re.IGNORECASE)
# Perspective's attribute descriptions, paraphrased from its public documentation, then short phrases of the kind
# TOXICITY, INSULT and PROFANITY react to. Fixed text: changing it changes every version.
ANCHOR_TEXTS = (
    "A rude, disrespectful, or unreasonable comment that is likely to make people leave a discussion.",
    "An insulting, inflammatory, or negative comment towards a person or a group of people.",
    "Swear words, curse words, or other obscene or profane language.",
    "Negative or hateful comments targeting someone because of their identity.",
    "Describes an intention to inflict pain, injury, or violence against an individual or group.",
    "References shared interests, motivations or outlooks between the author and another person, group or entity.",
    "Identifies with or shows concern, empathy, or support for the feelings and emotions of others.",
    "Proposes a solution or an intervention to a problem.",
    "Attempts to clarify or asks follow-up questions to better understand another person or idea.",
    "Incorporates multiple points of view to give a full picture or contributes useful detail and context.",
    "Includes a personal experience or story as a source of support for the statements made.",
    "Portrays someone as not belonging, as an outsider, or as less than human.",
    "Uses fear, exaggerated threats or alarming predictions to persuade.",
    "Makes sweeping claims about a whole group of people.",
    "Expresses anger or indignation at a perceived moral wrong.",
    "Blames a person or group for problems they are not responsible for.",
    *("you are an idiot", "shut up, moron", "fuck you", "this is fucking stupid", "I hate these people"),
    *("kill them all", "what a disgusting piece of shit", "go to hell", "stupid bitch", "these people are scum"),
    *("you're a pathetic loser", "damn it, this is bullshit", "racist garbage", "they should die"),
    *("dumb as hell", "screw you"),
)


class DistillError(ValueError):
    """The inputs cannot support a fit (unknown family or attribute, too few training posts)."""


@dataclass(frozen=True)
class DistillParams:
    """What a fit depends on besides its data; all of it goes into the version."""

    family: str = "ridge"
    folds: int = 5
    seed: int = 0
    min_posts: int = MIN_TRAINING_POSTS

    def text_weights(self) -> tuple[float, ...]:
        try:
            return FAMILIES[self.family]
        except KeyError:
            raise DistillError(f"unknown model family {self.family!r}; known: {sorted(FAMILIES)}") from None


def attribute_column(name: str) -> str:
    """`TOXICITY`, `toxicity`, `prob_toxicity` or `AFFINITY_EXPERIMENTAL` → the `prob_*` column."""
    column = name.strip().lower()
    column = column if column.startswith("prob_") else prob_column(column)
    if column not in PROB_COLUMNS:
        raise DistillError(f"unknown attribute {name!r}; known: {[c.removeprefix('prob_') for c in PROB_COLUMNS]}")
    return column


def logit(p: np.ndarray, clip: float = LOGIT_CLIP) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), clip, 1.0 - clip)
    return np.log(p / (1.0 - p))


def target_logit(p: np.ndarray) -> np.ndarray:
    """What the ridge is fitted on: the score's logit, clipped at TARGET_CLIP (measured on the reference: nested
    CV TOXICITY Spearman 0.801 with the 1e-4 clip, 0.807 with this one)."""
    return logit(p, TARGET_CLIP)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


# Features ---------------------------------------------------------------------------------------------------


def profanity_version() -> str:
    return f"alt-profanity-check-{importlib.metadata.version('alt-profanity-check')}"


def text_features(texts: Sequence[str]) -> np.ndarray:
    """The TEXT_FEATURES of each text, shape (n, 12): alt-profanity-check's shipped model read seven ways, and
    five counts. Deterministic and fast (vectorized), thousands of posts a second. The one function both the
    fit and the scorer call, so the features a head was fitted on are the ones it is applied to."""
    from profanity_check import profanity_check as pc  # loads the shipped model: only when features are asked

    texts = [text or "" for text in texts]
    if not texts:
        return np.zeros((0, len(TEXT_FEATURES)))
    terms = pc.vectorizer.transform(texts)
    svms = [c.estimator for c in pc.model.calibrated_classifiers_]
    margin = np.mean([svm.decision_function(terms) for svm in svms], axis=0)
    weights = np.mean([svm.coef_[0] for svm in svms], axis=0)
    contributions = terms.multiply(weights).tocsr()
    profane = np.asarray(contributions.maximum(0).sum(axis=1)).ravel()
    clean = np.asarray(contributions.minimum(0).sum(axis=1)).ravel()
    strongest = np.asarray(contributions.max(axis=1).todense()).ravel()
    present = terms.copy().tocsr()
    present.data[:] = 1.0
    strong_terms = np.asarray(present @ (weights > STRONG_TERM_WEIGHT).astype(np.float64)).ravel()
    # A sparse row's max counts its absent terms as 0: no positive term present reads 0.
    strongest_weight = np.asarray(present.multiply(weights).max(axis=1).todense()).ravel()
    probability = pc.model.predict_proba(terms)[:, 1]
    counts = np.array(
        [
            (
                np.log1p(len(text)),
                sum(c.isupper() for c in text) / max(1, sum(c.isalpha() for c in text)),
                text.count("!"),
                text.count("?"),
                len(SECOND_PERSON.findall(text)),
            )
            for text in texts
        ],
        dtype=np.float64,
    )
    return np.column_stack(
        [logit(probability), margin, profane, clean, strongest, strong_terms, strongest_weight, counts]
    )


def design_matrix(embeddings: np.ndarray, text: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """[embedding (384) | text features | cosine similarity to each anchor]: what the pipelines are fitted on."""
    vectors = np.asarray(embeddings, dtype=np.float64)
    return np.hstack([vectors, np.asarray(text, dtype=np.float64), vectors @ np.asarray(anchors, np.float64).T])


# The model and its training data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearHead:
    """One attribute's model folded to raw features: probability = sigmoid(E·w_e + T·w_t + b)."""

    attribute: str
    embedding_coef: np.ndarray = field(repr=False)
    text_coef: np.ndarray = field(repr=False)
    intercept: float
    text_weight: float
    alpha: float

    def predict(self, embeddings: np.ndarray, text: np.ndarray) -> np.ndarray:
        z = np.asarray(embeddings, dtype=np.float64) @ self.embedding_coef + np.asarray(text) @ self.text_coef
        return sigmoid(z + self.intercept)


@dataclass
class TrainingSet:
    """Posts with a training score, in uri order: targets[column] is NaN where no training scorer gave one."""

    uris: list[str]
    embeddings: np.ndarray
    text: np.ndarray
    targets: dict[str, np.ndarray]
    sources: dict[str, list[str | None]]


@dataclass
class AttributeFit:
    """One attribute's cross-validated figures, its out-of-fold predictions, and the head refitted on all rows."""

    attribute: str
    head: LinearHead
    uris: list[str]
    target: np.ndarray
    sources: list[str]
    oof: np.ndarray
    fold: np.ndarray
    fold_weights: list[float]

    def figures(self) -> dict[str, float | int | None]:
        positive = self.target >= POSITIVE_AT
        return {
            "n": len(self.uris),
            "n_positive": int(positive.sum()),
            "spearman": spearman(self.oof, self.target),
            "pearson": pearson(self.oof, self.target),
            "auc": roc_auc(self.oof, positive),
        }


def trainable_attributes(training: TrainingSet, requested: Sequence[str] | None, min_posts: int) -> list[str]:
    """The requested attributes (default: every one with at least `min_posts` training scores), in column order."""
    counts = {column: int(np.isfinite(values).sum()) for column, values in training.targets.items()}
    if requested:
        columns = list(dict.fromkeys(attribute_column(a) for a in requested))
        short = {c: counts.get(c, 0) for c in columns if counts.get(c, 0) < min_posts}
        if short:
            raise DistillError(f"too few training scores (need {min_posts}): {short}")
        return [c for c in PROB_COLUMNS if c in columns]
    columns = [c for c in PROB_COLUMNS if counts.get(c, 0) >= min_posts]
    if not columns:
        raise DistillError(f"no attribute has {min_posts} training scores (have {counts or 'none'})")
    return columns


@dataclass(frozen=True)
class DistilledModel:
    version: str
    embedding_model: str
    params: dict
    heads: dict[str, LinearHead]

    def predict(self, embeddings: np.ndarray, text: np.ndarray) -> dict[str, np.ndarray]:
        """Each attribute's probabilities for the rows of (embedding, text features): the heads stacked, so a
        batch is two matrix products whatever the number of attributes."""
        heads = list(self.heads.values())
        if not heads:
            return {}
        on_embedding = np.column_stack([h.embedding_coef for h in heads])
        on_text = np.column_stack([h.text_coef for h in heads])
        intercepts = np.array([h.intercept for h in heads])
        z = np.asarray(embeddings, dtype=np.float64) @ on_embedding + np.asarray(text) @ on_text + intercepts
        probs = sigmoid(z)
        return {column: probs[:, i] for i, column in enumerate(self.heads)}
