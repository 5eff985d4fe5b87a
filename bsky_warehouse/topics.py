"""Topics of posts: k-means over sentence embeddings, labelled by class-based TF-IDF, versioned by what went in.

Choice: scikit-learn `KMeans` rather than BERTopic. BERTopic 0.17.4 does install from PyPI, but it pulls
umap-learn, numba, llvmlite, pynndescent, hdbscan and plotly (7 packages, 76 MB of wheels, on top of the
embedding stack) for two parts this warehouse would switch off anyway: UMAP is reproducible only with a fixed
`random_state`, which also makes it single-threaded, and HDBSCAN puts a share of posts in an outlier topic -1,
while the contract here is one topic per eligible post, assigned to new days by nearest centroid. With k-means
in their place, what remains of BERTopic is its c-TF-IDF labelling, which is a dozen lines in topics_fit.py.

- Clustering: `KMeans(n_clusters=k, random_state=seed, n_init=10)` on the L2-normalized embeddings in uri
  order. With unit vectors, squared Euclidean distance is 2 − 2·cosine, so this is cosine clustering. The
  centres are then normalized, the sample is re-assigned to its nearest normalized centre (the same rule new
  posts get, so a sample post's stored topic matches its fitted cluster) and topics are numbered by size,
  largest first (ties by their first uri). A centre left with no post is dropped.
- k: configured, or `round(sqrt(n / 2))` clamped to [2, 40] (the common rule of thumb; 13 topics for the 358
  sample posts, 40 for a 5,000-post sample), never more than the sample has posts.
- Labels: class-based TF-IDF as BERTopic defines it: the posts of a topic are one document; a term's weight in
  topic c is `tf(t, c) / Σ_t tf(t, c) · log(1 + A / f(t))` with A the mean number of terms per topic (rounded
  down, as BERTopic does) and f(t) the term's count over all topics. Terms are lower-cased words of two or
  more letters, after removing URLs, @mentions, possessive 's and contractions, minus scikit-learn's English
  stop words and a few social-media fillers; a term must occur in at least `min_df` posts (2) so that one
  long post cannot name its topic. The label is the three best terms joined by " · ".
- Version: a digest of the algorithm tag, the embedding model, the parameters and the sorted sample uris, so
  the same fit over the same sample gives the same version and a different sample or setting a new one.

This module holds the fitted model, its version and the nearest-centroid assignment, and imports no
scikit-learn: every Dagster step process imports it. The fit (clustering and labels) is in topics_fit.py.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

ALGORITHM = "kmeans-ctfidf-v1"
MIN_TOPICS = 2
MAX_TOPICS = 40
LABEL_SEPARATOR = " · "


@dataclass(frozen=True)
class TopicParams:
    """What a fit depends on besides its sample; all of it goes into the version."""

    n_topics: int | None = None
    seed: int = 0
    n_init: int = 10
    min_df: int = 2
    n_terms: int = 10
    label_terms: int = 3


@dataclass(frozen=True)
class Topic:
    topic_id: int
    label: str
    top_terms: tuple[str, ...]
    size: int
    centroid: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class TopicModel:
    version: str
    embedding_model: str
    params: dict
    topics: tuple[Topic, ...]

    def centroids(self) -> np.ndarray:
        return np.stack([topic.centroid for topic in self.topics]).astype(np.float32)

    def assign(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's topic_id and cosine distance to that topic's centroid."""
        index, distance = nearest_centroid(embeddings, self.centroids())
        ids = np.array([topic.topic_id for topic in self.topics])
        return ids[index], distance

    def labels(self) -> dict[int, str]:
        return {topic.topic_id: topic.label for topic in self.topics}


def choose_n_topics(n_posts: int, requested: int | None = None) -> int:
    """The configured k, else round(sqrt(n / 2)) in [2, 40]; never more than there are posts."""
    if n_posts < MIN_TOPICS:
        raise ValueError(f"a topic model needs at least {MIN_TOPICS} posts, got {n_posts}")
    if requested is not None:
        if requested < 1:
            raise ValueError(f"n_topics must be positive, got {requested}")
        return min(requested, n_posts)
    return min(max(MIN_TOPICS, round(math.sqrt(n_posts / 2))), MAX_TOPICS, n_posts)


def topic_model_version(embedding_model: str, params: TopicParams, uris: Sequence[str]) -> str:
    """Same embedding model, parameters and sample (in any order) → same version."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"algorithm": ALGORITHM, "embedding_model": embedding_model, "params": asdict(params)},
                             sort_keys=True).encode())  # fmt: skip
    for uri in sorted(set(uris)):
        digest.update(b"\n" + uri.encode())
    return f"topics-{digest.hexdigest()[:16]}"


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit-length rows in float64 (a zero row stays zero)."""
    matrix = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def nearest_centroid(embeddings: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the most cosine-similar centroid for each row (ties: the lower index) and the cosine distance."""
    if len(embeddings) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    similarity = normalize_rows(embeddings) @ normalize_rows(centroids).T
    index = np.argmax(similarity, axis=1)
    distance = 1.0 - similarity[np.arange(len(index)), index]
    return index, np.clip(distance, 0.0, 2.0)
