"""The Perspective client against a Perspective-compatible server over real sockets.

Faults are scripted per post by triggers in the comment text (see tests/servers/perspective_server.py),
and the server counts requests per text, so each test asserts both the recorded outcome and exactly how
many paid calls it cost.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from bsky_warehouse.records import (
    PERSPECTIVE_ATTRIBUTES,
    PERSPECTIVE_PRODUCTION,
    PostText,
    ScoreResult,
    prob_column,
)
from bsky_warehouse.resources.perspective import (
    API_KEY_HEADER,
    MAX_COMMENT_BYTES,
    MalformedResponse,
    PerspectiveConfigError,
    PerspectiveResource,
    ScoreStats,
    TokenBucket,
    build_request,
    classify_error,
    parse_scores,
    redact,
    rejection_message,
    request_headers,
)
from tests.servers.perspective_server import Faults, PerspectiveServer, score

ROOT = Path(__file__).resolve().parents[1]
SECRET = "AIzaSy-secret-test-key-0123456789"

LANGUAGE_ERROR = {
    "error": {
        "code": 400,
        "message": "Attribute SEVERE_TOXICITY does not support request languages: is",
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.commentanalyzer.v1alpha1.Error",
                "errorType": "LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE",
                "languageNotSupportedByAttributeError": {
                    "detectedLanguages": ["is"],
                    "attribute": "SEVERE_TOXICITY",
                },
            }
        ],
    }
}


def _perspective_error(error_type: str, message: str) -> dict:
    detail = {"@type": "type.googleapis.com/google.commentanalyzer.v1alpha1.Error", "errorType": error_type}
    return {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT", "details": [detail]}}


# --------------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------------


def test_build_request_shape() -> None:
    body = build_request("hello", ["TOXICITY", "INSULT"], ["en"])
    assert body == {
        "comment": {"text": "hello"},
        "requestedAttributes": {"TOXICITY": {}, "INSULT": {}},
        "languages": ["en"],
        "doNotStore": True,
    }
    assert "languages" not in build_request("hello", ["TOXICITY"], [])


def test_parse_scores_keys_by_prob_column() -> None:
    body = {
        "attributeScores": {
            "TOXICITY": {"summaryScore": {"value": 0.25, "type": "PROBABILITY"}, "spanScores": []},
            "AFFINITY_EXPERIMENTAL": {"summaryScore": {"value": 1, "type": "PROBABILITY"}},
        },
        "languages": ["en"],
    }
    assert parse_scores(body) == {"prob_toxicity": 0.25, "prob_affinity": 1.0}
    assert parse_scores(b'{"attributeScores": {"INSULT": {"summaryScore": {"value": 0.5}}}}') == {"prob_insult": 0.5}


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502</html>",
        b'{"attributeScores": {"TOXICITY": {"summaryScore": {"val',
        {"languages": ["en"]},
        {"attributeScores": {}},
        {"attributeScores": {"TOXICITY": {"spanScores": []}}},
        {"attributeScores": {"TOXICITY": {"summaryScore": {"value": "0.3"}}}},
        {"attributeScores": {"TOXICITY": {"summaryScore": {"value": 1.5}}}},
        [1, 2],
    ],
)
def test_parse_scores_rejects_malformed(body: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_scores(body)  # type: ignore[arg-type]


def test_parse_scores_requires_expected_attributes() -> None:
    body = {"attributeScores": {"TOXICITY": {"summaryScore": {"value": 0.1}}}}
    with pytest.raises(MalformedResponse, match="INSULT"):
        parse_scores(body, expected=["TOXICITY", "INSULT"])


def test_classify_error_language_not_supported() -> None:
    assert classify_error(400, LANGUAGE_ERROR) == ("language_not_supported", False, "SEVERE_TOXICITY", False)
    # Same answer from raw bytes, and from the message alone when details are missing.
    assert classify_error(400, orjson.dumps(LANGUAGE_ERROR)).unsupported_attribute == "SEVERE_TOXICITY"
    no_attr = _perspective_error(
        "LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE", "Attribute THREAT does not support request languages: xx"
    )
    assert classify_error(400, no_attr) == ("language_not_supported", False, "THREAT", False)


def test_classify_error_table() -> None:
    empty = _perspective_error("COMMENT_EMPTY", "Comment must be non-empty.")
    too_long = _perspective_error(
        "COMMENT_TOO_LONG", "Comment text was too many bytes. Value (23368) exceeded limit (20480)."
    )
    quota = {
        "error": {
            "code": 429,
            "message": "Quota exceeded for quota metric 'Analysis requests' and limit "
            "'Analysis requests per minute' of service 'commentanalyzer.googleapis.com'",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"}],
        }
    }
    unknown_comment_error = _perspective_error("SOME_NEW_COMMENT_ERROR", "This comment cannot be analyzed.")
    assert classify_error(400, empty) == ("comment_empty", False, None, False)
    assert classify_error(400, too_long) == ("comment_too_long", False, None, False)
    assert classify_error(400, unknown_comment_error) == ("api_error", False, None, False)
    assert classify_error(429, quota) == ("api_error", True, None, False)
    assert classify_error(500, b"") == ("api_error", True, None, False)
    assert classify_error(503, b"<html>unavailable</html>") == ("api_error", True, None, False)
    assert classify_error(408, None) == ("api_error", True, None, False)


# What Google answers a wrong key, a missing key and a key whose project may not call the API.
BAD_KEY = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        ],
    }
}
MISSING_KEY = {
    "error": {"code": 403, "message": "The request is missing a valid API key.", "status": "PERMISSION_DENIED"}
}
BLOCKED_KEY = {
    "error": {
        "code": 403,
        "message": "Requests to this API commentanalyzer.googleapis.com method ... are blocked.",
        "status": "PERMISSION_DENIED",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_SERVICE_BLOCKED"}],
    }
}


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, BAD_KEY),
        (403, MISSING_KEY),
        (403, BLOCKED_KEY),
        (401, {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                         "status": "UNAUTHENTICATED"}}),
        (400, {"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT"}}),
        (404, b"<html>404. That's an error.</html>"),
        (403, None),
    ],
)  # fmt: skip
def test_classify_error_key_and_request_errors_reject_the_request(status: int, body: object) -> None:
    error = classify_error(status, body)  # type: ignore[arg-type]
    assert error.rejects_request and not error.retryable


def test_rejection_message_says_what_and_where_to_look() -> None:
    bad_key = rejection_message(400, orjson.dumps(BAD_KEY))
    assert "HTTP 400 INVALID_ARGUMENT API_KEY_INVALID" in bad_key
    assert "PERSPECTIVE_API_KEY" in bad_key and "API key not valid" in bad_key
    blocked = rejection_message(403, BLOCKED_KEY)
    assert "PERMISSION_DENIED API_KEY_SERVICE_BLOCKED" in blocked and "enabled" in blocked
    assert "PERSPECTIVE_API_KEY" in rejection_message(403, MISSING_KEY)
    assert "PERSPECTIVE_BASE_URL" in rejection_message(404, b"<html>not found</html>")


def test_redact() -> None:
    text = f"Permission denied: Consumer 'api_key:{SECRET}' has been suspended."
    assert redact(text, SECRET) == "Permission denied: Consumer 'api_key:REDACTED' has been suspended."
    assert redact(text, "") == text


def test_the_key_goes_in_a_header_never_in_settings_repr() -> None:
    assert request_headers(SECRET) == {"content-type": "application/json", API_KEY_HEADER: SECRET}
    assert API_KEY_HEADER not in request_headers("")
    settings = PerspectiveResource(api_key=SECRET).client_settings()
    assert settings.api_key == SECRET
    assert SECRET not in repr(settings) and SECRET not in str(settings)


def test_llm_client_settings_repr_hides_the_key() -> None:
    from bsky_warehouse.resources.llm import ClientSettings, OpenAILabelerResource

    settings = ClientSettings(base_url="http://127.0.0.1:1/v1", model="m", api_key=SECRET)
    assert SECRET not in repr(settings)
    resource = OpenAILabelerResource(base_url="http://127.0.0.1:1/v1", model="m", api_key=SECRET)
    assert SECRET not in repr(resource) and SECRET not in repr(resource.client_settings())


def test_token_bucket_paces_and_backs_off() -> None:
    async def run() -> tuple[float, float]:
        bucket = TokenBucket(100.0)
        start = time.monotonic()
        for _ in range(51):
            await bucket.acquire()
        paced = time.monotonic() - start
        bucket.on_throttled(0.2)
        start = time.monotonic()
        await bucket.acquire()
        return paced, time.monotonic() - start

    paced, paused = asyncio.run(run())
    assert paced >= 0.45  # 50 tokens beyond the first burst at 100/s: at least 0.5 s less one token's slack
    assert paused >= 0.19


# --------------------------------------------------------------------------------------------------
# Against the local server
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[PerspectiveServer]:
    with PerspectiveServer(None, api_key=SECRET, retry_after=0.2, faults=Faults(slow_s=1.0)) as srv:
        yield srv


def resource(srv: PerspectiveServer, **overrides: object) -> PerspectiveResource:
    config: dict[str, object] = {
        "api_key": SECRET,
        "base_url": srv.url,
        "qps": 200.0,
        "timeout_s": 2.0,
        "backoff_base_s": 0.02,
        "backoff_max_s": 0.2,
    }
    config.update(overrides)
    return PerspectiveResource(**config)  # type: ignore[arg-type]


def run_scoring(res: PerspectiveResource, texts: list[str]) -> tuple[dict[str, ScoreResult], ScoreStats, Counter[str]]:
    """Score `texts` (uri = index); returns results by text, stats and callbacks per uri."""
    posts = [PostText(uri=f"at://test/{i}", text=t) for i, t in enumerate(texts)]
    calls: Counter[str] = Counter()
    by_uri: dict[str, ScoreResult] = {}

    def on_result(result: ScoreResult) -> None:
        calls[result.uri] += 1
        by_uri[result.uri] = result

    stats = res.score(posts, on_result)
    assert set(calls) == {p.uri for p in posts}
    assert all(n == 1 for n in calls.values()), "on_result must be called exactly once per post"
    return {p.text: by_uri[p.uri] for p in posts}, stats, calls


def test_success_with_all_attributes(server: PerspectiveServer) -> None:
    texts = ["you are an idiot", "lovely weather today", "damn this crap"]
    results, stats, _ = run_scoring(resource(server), texts)
    for text in texts:
        result = results[text]
        assert result.status == "ok" and result.reason is None
        assert result.probs == {prob_column(a): score(text, a) for a in PERSPECTIVE_ATTRIBUTES}
        assert server.counts[text] == 1
    assert results["you are an idiot"].probs["prob_insult"] > results["lovely weather today"].probs["prob_insult"]
    assert (stats.requests, stats.ok, stats.retries, stats.http_429) == (3, 3, 0, 0)


def test_text_too_short_is_skipped_without_a_request(server: PerspectiveServer) -> None:
    texts = ["", "   ", " ab ", "abc"]
    results, stats, _ = run_scoring(resource(server, min_text_length=3), texts)
    for text in texts[:3]:
        assert (results[text].status, results[text].reason) == ("skipped", "text_too_short")
        assert server.counts[text] == 0
    assert results["abc"].status == "ok"
    assert stats.requests == 1 and stats.skipped == 3


def test_comment_too_long_fails_without_a_request(server: PerspectiveServer) -> None:
    ascii_long = "x" * (MAX_COMMENT_BYTES + 1)
    multibyte_long = "é" * (MAX_COMMENT_BYTES // 2 + 1)  # fewer characters than the limit, more bytes
    at_limit = "y" * MAX_COMMENT_BYTES
    results, stats, _ = run_scoring(resource(server), [ascii_long, multibyte_long, at_limit])
    for text in (ascii_long, multibyte_long):
        assert (results[text].status, results[text].reason) == ("failed", "comment_too_long")
        assert server.counts[text] == 0
    assert results[at_limit].status == "ok" and server.counts[at_limit] == 1
    assert stats.requests == 1


def test_comment_empty_reported_by_api(server: PerspectiveServer) -> None:
    results, _, _ = run_scoring(resource(server, min_text_length=0), ["\n \t"])
    assert (results["\n \t"].status, results["\n \t"].reason) == ("failed", "comment_empty")
    assert server.counts["\n \t"] == 1


def test_language_not_supported_falls_back_then_succeeds(server: PerspectiveServer) -> None:
    german, icelandic = "@@lang:de hallo zusammen", "@@lang:is góðan daginn"
    results, stats, _ = run_scoring(resource(server), [german, icelandic])
    # German: one error, then the production attributes succeed.
    assert results[german].status == "ok" and results[german].reason is None
    assert set(results[german].probs) == {prob_column(a) for a in PERSPECTIVE_PRODUCTION}
    assert server.counts[german] == 2
    # Icelandic: the fallback request itself is refused for SEVERE_TOXICITY, which is then dropped too.
    assert results[icelandic].status == "ok"
    assert set(results[icelandic].probs) == {prob_column(a) for a in PERSPECTIVE_PRODUCTION if a != "SEVERE_TOXICITY"}
    assert server.counts[icelandic] == 2
    assert stats.language_fallbacks == 2 and stats.retries == 0


def test_language_not_supported_fails_when_nothing_is_supported(server: PerspectiveServer) -> None:
    text = "@@lang:xx zzz"
    results, _, _ = run_scoring(resource(server, max_language_fallbacks=3), [text])
    assert (results[text].status, results[text].reason) == ("failed", "language_not_supported")
    assert results[text].probs == {}
    assert server.counts[text] == 4  # the original request and at most three narrower ones


def test_configured_languages_are_sent(server: PerspectiveServer) -> None:
    text = "guten Morgen allerseits"
    results, _, _ = run_scoring(resource(server, languages=["de"], attributes=["TOXICITY", "INSULT"]), [text])
    assert results[text].probs.keys() == {"prob_toxicity", "prob_insult"}
    assert server.counts[text] == 1


def test_post_langs_used_when_configured(server: PerspectiveServer) -> None:
    posts = [PostText("at://test/fr", "bonjour tout le monde", ("fr",)), PostText("at://test/en", "plain post")]
    results: dict[str, ScoreResult] = {}
    resource(server, use_post_langs=True).score(posts, lambda r: results.__setitem__(r.uri, r))
    # French supports only production attributes: one language fallback; the post without langs uses `en`.
    assert len(results["at://test/fr"].probs) == len(PERSPECTIVE_PRODUCTION)
    assert server.counts["bonjour tout le monde"] == 2
    assert len(results["at://test/en"].probs) == len(PERSPECTIVE_ATTRIBUTES)


def test_429_retry_after_is_honoured_and_nothing_lost() -> None:
    text = "@@429x2 rate limited twice"
    with PerspectiveServer(None, api_key=SECRET, retry_after=0.4) as srv:
        results, stats, _ = run_scoring(resource(srv, backoff_base_s=0.001), [text])
        times = srv.times(text)
    assert results[text].status == "ok"
    assert len(times) == 3 and stats.http_429 == 2
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.39 for gap in gaps), gaps


def test_quota_exhaustion_loses_nothing() -> None:
    """Client configured at 3x the real quota: 429s happen, every post still ends ok exactly once."""
    texts = [f"quota post number {i}" for i in range(60)]
    with PerspectiveServer(20.0, api_key=SECRET, burst=2.0, retry_after=None) as srv:
        results, stats, _ = run_scoring(resource(srv, qps=60.0, backoff_base_s=0.1, max_retries=8), texts)
        ok_counts, server_stats = srv.ok_counts, srv.stats
    assert all(results[t].status == "ok" for t in texts)
    assert all(ok_counts[t] == 1 for t in texts)
    assert server_stats["http_429"] > 0 and stats.http_429 == server_stats["http_429"]
    assert stats.requests == 60 + stats.http_429


def test_persistent_429_fails_as_api_error(server: PerspectiveServer) -> None:
    text = "@@429 always throttled"
    results, stats, _ = run_scoring(resource(server, max_retries=2), [text])
    assert (results[text].status, results[text].reason) == ("failed", "api_error")
    assert server.counts[text] == 3 and stats.http_429 == 3


def test_5xx_is_retried(server: PerspectiveServer) -> None:
    texts = ["@@500x2 flaky backend", "@@503x1 briefly unavailable"]
    results, stats, _ = run_scoring(resource(server), texts)
    assert all(results[t].status == "ok" for t in texts)
    assert server.counts[texts[0]] == 3 and server.counts[texts[1]] == 2
    assert stats.http_5xx == 3 and stats.retries == 3


def test_persistent_5xx_fails_as_api_error(server: PerspectiveServer) -> None:
    text = "@@500 broken backend"
    results, _, _ = run_scoring(resource(server, max_retries=3), [text])
    assert (results[text].status, results[text].reason) == ("failed", "api_error")
    assert server.counts[text] == 4


def test_timeout_is_retried(server: PerspectiveServer) -> None:
    text = "@@slowx1 stalls once"
    results, stats, _ = run_scoring(resource(server, timeout_s=0.3), [text])
    assert results[text].status == "ok"
    assert server.counts[text] == 2 and stats.timeouts == 1


def test_dropped_connection_is_retried(server: PerspectiveServer) -> None:
    text = "@@dropx2 connection reset twice"
    results, stats, _ = run_scoring(resource(server), [text])
    assert results[text].status == "ok"
    assert server.counts[text] == 3 and stats.transport_errors == 2


def test_malformed_body_retried_then_api_error(server: PerspectiveServer) -> None:
    transient, persistent = "@@malformedx3 garbled thrice", "@@malformed always garbled"
    results, stats, _ = run_scoring(resource(server, max_retries=3), [transient, persistent])
    assert results[transient].status == "ok" and server.counts[transient] == 4
    assert (results[persistent].status, results[persistent].reason) == ("failed", "api_error")
    assert server.counts[persistent] == 4
    assert stats.malformed == 7


def test_the_key_travels_in_the_header_and_in_no_url(server: PerspectiveServer) -> None:
    server.reset()
    results, _, _ = run_scoring(resource(server), ["header key post one", "header key post two"])
    assert all(r.status == "ok" for r in results.values())  # the server accepted the header
    targets = server.targets
    assert len(targets) == 2
    assert all(SECRET not in t and "key=" not in t for t in targets), targets


@pytest.mark.parametrize(
    ("key", "status", "hint"),
    [
        ("WRONG-" + SECRET[::-1], "HTTP 400 INVALID_ARGUMENT API_KEY_INVALID", "API key not valid"),
        ("", "HTTP 403 PERMISSION_DENIED", "missing a valid API key"),
        ("BLOCKED-" + SECRET, "HTTP 403 PERMISSION_DENIED API_KEY_SERVICE_BLOCKED", "are blocked"),
    ],
)
def test_a_rejected_key_stops_scoring_records_nothing_and_never_leaks(
    key: str, status: str, hint: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts = [f"rejected key post {i}" for i in range(20)]
    posts = [PostText(f"at://test/rk{i}", t) for i, t in enumerate(texts)]
    reported: list[ScoreResult] = []
    with PerspectiveServer(None, api_key=SECRET, denied_keys=("BLOCKED-" + SECRET,)) as srv:
        res = resource(srv, api_key=key, max_concurrency=4)
        with pytest.raises(PerspectiveConfigError) as raised:
            res.score(posts, reported.append)
        targets, stats = srv.targets, srv.stats
    message = str(raised.value)
    assert status in message and hint in message and "PERSPECTIVE_API_KEY" in message
    assert reported == []  # no row for any post: the run fails instead
    assert len(targets) <= 4  # the requests already in flight, none retried, the rest never sent
    assert stats["requests"] == 0 and stats["ok"] == 0  # rejected before any comment was analysed
    for text in (caplog.text, message, repr(res), str(res), repr(res.client_settings()), *targets):
        assert SECRET not in text and (not key or key not in text)


def test_per_post_errors_still_become_rows_beside_good_posts(server: PerspectiveServer) -> None:
    texts = ["@@lang:xx nothing supports this", "\n \t", "a fine post"]
    results, _, _ = run_scoring(resource(server, min_text_length=0), texts)
    assert (results[texts[0]].status, results[texts[0]].reason) == ("failed", "language_not_supported")
    assert (results[texts[1]].status, results[texts[1]].reason) == ("failed", "comment_empty")
    assert results[texts[2]].status == "ok"


@pytest.mark.integration
def test_a_wrong_key_fails_the_dagster_run_and_writes_no_rows(tmp_path: Path) -> None:
    from dagster import DagsterInstance

    from bsky_warehouse.partitions import DayWindow
    from bsky_warehouse.pipeline import run_window
    from bsky_warehouse.resources.warehouse import WarehouseResource
    from tests.factories import post_event, write_archive

    archive, db = tmp_path / "archive", str(tmp_path / "wh.duckdb")
    write_archive(
        archive / "d.jsonl", [post_event(f"p{i}", text=f"a post worth scoring, number {i}") for i in range(6)]
    )
    instance = DagsterInstance.ephemeral()
    window = DayWindow.for_day("2024-03-10")
    ingest = ["raw_posts", "post_deletions", "rejected_records", "cleaned_posts"]
    assert run_window(window, instance, db_path=db, archive_dir=str(archive), assets=ingest)["success"]
    with PerspectiveServer(None, api_key=SECRET) as srv:
        wrong = PerspectiveResource(api_key="WRONG-" + SECRET[::-1], base_url=srv.url, qps=50, backoff_base_s=0.01)
        run = run_window(window, instance, db_path=db, assets=["toxicity_scores"], raise_on_error=False,
                         resources={"perspective": wrong},
                         run_config={"ops": {"toxicity_scores": {"config": {"scorer": "perspective"}}}})  # fmt: skip
    assert not run["success"]
    assert "toxicity_scores" not in run["assets_materialized"]
    assert any("API_KEY_INVALID" in f and "PERSPECTIVE_API_KEY" in f for f in run["failures"]), run["failures"]
    warehouse = WarehouseResource(path=db)
    with warehouse.connect() as con:
        assert con.execute("SELECT count(*) FROM toxicity_scores").fetchone() == (0,)
    checkpoints = [p for p in warehouse.staging_dir.rglob("*") if p.is_file() and "toxicity_scores" in str(p)]
    assert all(p.stat().st_size == 0 for p in checkpoints), checkpoints


def test_unreachable_server_is_api_error_without_leaking_key(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    caplog.set_level(logging.DEBUG)
    res = PerspectiveResource(
        api_key=SECRET, base_url=f"http://127.0.0.1:{port}", qps=100, max_retries=2, backoff_base_s=0.01
    )
    posts = [PostText("at://test/down", "nobody home")]
    results: list[ScoreResult] = []
    stats = res.score(posts, results.append)
    assert [(r.status, r.reason) for r in results] == [("failed", "api_error")]
    assert stats.transport_errors == 3
    assert SECRET not in caplog.text


def test_random_faults_every_post_scored_exactly_once() -> None:
    faults = Faults(rate_5xx=0.1, rate_drop=0.05, rate_malformed=0.05, seed=7)
    texts = [f"mixed fault post {i}" for i in range(150)]
    with PerspectiveServer(None, api_key=SECRET, faults=faults) as srv:
        results, stats, _ = run_scoring(resource(srv, qps=300.0, max_retries=8), texts)
        ok_counts = srv.ok_counts
    assert all(results[t].status == "ok" for t in texts)
    assert all(ok_counts[t] == 1 for t in texts)
    assert stats.retries > 0 and stats.requests == 150 + stats.retries


def test_callback_error_stops_scoring(server: PerspectiveServer) -> None:
    posts = [PostText(f"at://test/cb{i}", f"callback post {i}") for i in range(40)]

    def on_result(result: ScoreResult) -> None:
        raise RuntimeError("checkpoint failed")

    with pytest.raises(RuntimeError, match="checkpoint failed"):
        resource(server, qps=20.0, max_concurrency=2).score(posts, on_result)
    assert sum(server.counts[p.text] for p in posts) < 10


def test_scorer_identity_and_validation() -> None:
    res = PerspectiveResource(api_key=SECRET)
    assert (res.name, res.version, res.qps, res.languages) == ("perspective", "v1alpha1", 1.0, ["en"])
    assert tuple(res.attributes) == PERSPECTIVE_ATTRIBUTES
    assert res.client_settings().max_concurrency >= 4
    assert PerspectiveResource(api_key=SECRET, qps=50).client_settings().max_concurrency >= 50
    assert res.score([], lambda r: None) == ScoreStats()
    with pytest.raises(ValueError, match="NOT_AN_ATTRIBUTE"):
        PerspectiveResource(api_key=SECRET, attributes=["NOT_AN_ATTRIBUTE"]).score(
            [PostText("at://x", "y")], lambda r: None
        )


def test_standalone_server_process_counts_over_http() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.perspective_server", "--port", "0", "--qps", "50", "--key", SECRET],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        res = PerspectiveResource(api_key=SECRET, base_url=url, qps=50)
        results: list[ScoreResult] = []
        res.score([PostText(f"at://p/{i}", f"standalone {i}") for i in range(5)], results.append)
        assert [r.status for r in results] == ["ok"] * 5
        snapshot = httpx.get(f"{url}/_counts").json()
        assert snapshot["counts"] == {f"standalone {i}": 1 for i in range(5)}
        assert snapshot["stats"]["ok"] == 5
    finally:
        proc.kill()
        proc.wait(timeout=5)
