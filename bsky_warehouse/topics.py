"""Topics of posts: k-means over sentence embeddings, labelled by class-based TF-IDF, versioned by what went in.

Choice: scikit-learn `KMeans` rather than BERTopic. BERTopic 0.17.4 does install from PyPI, but it pulls
umap-learn, numba, llvmlite, pynndescent, hdbscan and plotly (7 packages, 76 MB of wheels, on top of the
embedding stack) for two parts this warehouse would switch off anyway: UMAP is reproducible only with a fixed
`random_state`, which also makes it single-threaded, and HDBSCAN puts a share of posts in an outlier topic -1,
while the contract here is one topic per eligible post, assigned to new days by nearest centroid. With k-means
in their place, what remains of BERTopic is its c-TF-IDF labelling, which is a dozen lines below.

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
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

ALGORITHM = "kmeans-ctfidf-v1"
MIN_TOPICS = 2
MAX_TOPICS = 40
LABEL_SEPARATOR = " · "

URL = re.compile(
    r"(?:https?://|www\.)\S+|\b[\w-]+(?:\.[\w-]+)+/\S*|\b(?:[\w-]+\.)+(?:com|org|net|edu|gov|io|co|app|social|uk)\b",
    re.IGNORECASE,
)
MENTION = re.compile(r"(?<![\w@])@[\w.-]+")
POSSESSIVE = re.compile(r"(?<=\w)'s\b")
CONTRACTION = re.compile(r"\b\w+'\w+\b")
WORD = re.compile(r"[^\W\d_]{2,}")
EXTRA_STOP_WORDS = frozenset(
    {
        *("amp", "rt", "via", "lol", "lmao", "gonna", "wanna", "yeah", "oh", "ok", "okay"),
        *("im", "ive", "ill", "id", "youre", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "cant", "wont"),
        *("just", "like", "really", "got", "get", "gets", "getting", "thing", "things"),
    }
)
STOP_WORDS = ENGLISH_STOP_WORDS | EXTRA_STOP_WORDS


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


def terms(text: str | None) -> list[str]:
    """The words a label may use: no URLs, mentions, possessives, contractions, stop words or numbers."""
    cleaned = (text or "").replace("\u2019", "'").replace("\u2018", "'")
    cleaned = MENTION.sub(" ", URL.sub(" ", cleaned)).lower()
    cleaned = CONTRACTION.sub(" ", POSSESSIVE.sub("", cleaned))
    return [word for word in WORD.findall(cleaned) if word not in STOP_WORDS]


def class_tfidf(counts: np.ndarray) -> np.ndarray:
    """BERTopic's c-TF-IDF of a (topics × terms) count matrix: L1-normalized term frequency per topic times
    log(1 + mean terms per topic / the term's count over all topics)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size == 0:
        return counts
    per_term = counts.sum(axis=0)
    average = int(counts.sum(axis=1).mean())
    idf = np.log(1.0 + average / np.where(per_term == 0, 1.0, per_term))
    per_topic = counts.sum(axis=1, keepdims=True)
    return counts / np.where(per_topic == 0, 1.0, per_topic) * idf


def top_terms(
    texts: Sequence[str | None], topic_of: Sequence[int], n_topics: int, n_terms: int, min_df: int
) -> list[list[str]]:
    """The best c-TF-IDF terms of each topic 0..n_topics-1 (ties alphabetically); only terms it contains."""
    vectorizer = CountVectorizer(analyzer=terms, min_df=min(min_df, len(texts)))
    try:
        doc_terms = vectorizer.fit_transform(texts)
    except ValueError:  # no text has a usable term
        return [[] for _ in range(n_topics)]
    vocabulary = vectorizer.get_feature_names_out()
    counts = np.zeros((n_topics, len(vocabulary)))
    for topic in range(n_topics):
        rows = np.flatnonzero(np.asarray(topic_of) == topic)
        if len(rows):
            counts[topic] = np.asarray(doc_terms[rows].sum(axis=0)).ravel()
    weights = class_tfidf(counts)
    result = []
    for topic in range(n_topics):
        order = sorted(
            (i for i in np.flatnonzero(weights[topic] > 0)), key=lambda i: (-weights[topic, i], vocabulary[i])
        )
        result.append([str(vocabulary[i]) for i in order[:n_terms]])
    return result


def make_label(topic_id: int, words: Sequence[str], label_terms: int) -> str:
    return LABEL_SEPARATOR.join(words[:label_terms]) if words else f"topic {topic_id}"


def fit_topic_model(
    uris: Sequence[str],
    texts: Sequence[str | None],
    embeddings: np.ndarray,
    embedding_model: str,
    params: TopicParams,
) -> TopicModel:
    """Cluster the sample, number topics by size and label them; deterministic for the same inputs."""
    if not (len(uris) == len(texts) == len(embeddings)):
        raise ValueError(f"uris ({len(uris)}), texts ({len(texts)}) and embeddings ({len(embeddings)}) differ")
    if len(set(uris)) != len(uris):
        raise ValueError("the sample holds a uri twice")
    order = sorted(range(len(uris)), key=lambda i: uris[i])
    uris = [uris[i] for i in order]
    texts = [texts[i] for i in order]
    vectors = np.asarray(embeddings)[order]
    k = choose_n_topics(len(uris), params.n_topics)
    kmeans = KMeans(n_clusters=k, random_state=params.seed, n_init=params.n_init).fit(normalize_rows(vectors))
    # Stored as FLOAT[384]: assign the sample with the float32 centres exactly as later days will be.
    centres = normalize_rows(kmeans.cluster_centers_).astype(np.float32)
    cluster, _ = nearest_centroid(vectors, centres)
    sizes = np.bincount(cluster, minlength=k)
    first_uri = {c: uris[int(np.flatnonzero(cluster == c)[0])] for c in range(k) if sizes[c]}
    kept = sorted(first_uri, key=lambda c: (-sizes[c], first_uri[c]))
    renumber = {old: new for new, old in enumerate(kept)}
    topic_of = [renumber[c] for c in cluster]
    words = top_terms(texts, topic_of, len(kept), params.n_terms, params.min_df)
    topics = tuple(
        Topic(
            new,
            make_label(new, words[new], params.label_terms),
            tuple(words[new]),
            int(sizes[old]),
            centres[old],
        )
        for new, old in enumerate(kept)
    )
    stored_params = {**asdict(params), "algorithm": ALGORITHM, "n_topics_fitted": len(kept), "sample_size": len(uris)}
    return TopicModel(topic_model_version(embedding_model, params, uris), embedding_model, stored_params, topics)
