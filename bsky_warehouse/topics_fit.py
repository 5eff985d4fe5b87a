"""Fitting a topic model (topics.py): k-means over the sample's embeddings, then c-TF-IDF labels.

Kept apart from topics.py because it imports scikit-learn (about 3 s): only the fit imports this module, while
assigning later days needs only the stored centroids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

from bsky_warehouse.topics import (
    ALGORITHM,
    LABEL_SEPARATOR,
    Topic,
    TopicModel,
    TopicParams,
    choose_n_topics,
    nearest_centroid,
    normalize_rows,
    topic_model_version,
)

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
