"""Author history scans against a local AppView: whole history paged, faults survived, scored, ranked, re-runnable."""

from __future__ import annotations

import json

import duckdb
import pytest

from bsky_warehouse.authors import normalize_actor
from bsky_warehouse.cli import main
from bsky_warehouse.scorers import make_scorer
from tests.servers.appview_server import AppViewServer, Fault, feed_view_post

DID = "did:plc:scanned0author"
HANDLE = "scanned.bsky.social"
TOXIC = {17: "you are a stupid worthless idiot, shut the fuck up", 140: "fuck off you pathetic moron"}


def post_link(uri: str) -> str:
    """The bsky.app page of `at://<did>/app.bsky.feed.post/<rkey>`: the oracle for the report's dbt-built links."""
    did, _, rkey = uri.removeprefix("at://").split("/")
    return f"https://bsky.app/profile/{did}/post/{rkey}"


def history(n: int = 230) -> list:
    """An account's feed, newest first, with the oddities a real history has."""
    items = []
    for i in range(n):
        day = 1 + i % 28
        text = TOXIC.get(i, f"lovely walk in the park today, number {i}")
        items.append(
            feed_view_post(
                i, did=DID, handle=HANDLE, text=text, created_at=f"2023-{1 + i % 12:02d}-{day:02d}T10:00:00Z"
            )
        )
    items[5] = feed_view_post(9001, did="did:plc:someoneelse", handle="else.bsky.social", repost_by=DID)
    items[33]["post"]["record"]["createdAt"] = "yesterday"
    items[34] = {"post": {"uri": "at://not-a-post"}}
    items[80]["post"]["record"]["createdAt"] = "2019-01-01T00:00:00Z"
    items[120] = items[119]  # the AppView repeats an item across a page boundary now and then
    return items


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "wh.duckdb"
    monkeypatch.setenv("BSKY_WAREHOUSE_DB", str(path))
    return path


def test_normalize_actor_and_links():
    assert normalize_actor(" @Alice.BSKY.Social ") == "alice.bsky.social"
    assert normalize_actor("did:plc:abc123") == "did:plc:abc123"
    for bad in ("alice", "did:", "not a handle.com", "@", "a..b.com"):
        with pytest.raises(ValueError, match=r"(not a valid DID|neither a handle)"):
            normalize_actor(bad)
    assert post_link(f"at://{DID}/app.bsky.feed.post/3kx") == f"https://bsky.app/profile/{DID}/post/3kx"


@pytest.mark.integration
def test_scan_author_pages_history_through_faults_and_ranks_it(db, tmp_path, capsys):
    items = history()
    faults = {2: Fault(429, reset_in_s=1), 4: Fault(503)}
    with AppViewServer(author_feeds={DID: items}, handles={HANDLE: DID}, faults=faults) as server:
        main(["scan-author", f"@{HANDLE.upper()}", "--appview", f"http://{server.host}", "--json"])
        first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        feed_requests = server.count("/xrpc/app.bsky.feed.getAuthorFeed")
    # 230 items at 100 a page = 3 pages, plus the 429 and the 503 retried.
    assert feed_requests == 3 + 2
    con = duckdb.connect(str(db), read_only=True)
    posts = {r[0] for r in con.execute("SELECT uri FROM author_posts").fetchall()}
    expected = {it["post"]["uri"] for i, it in enumerate(items) if i not in (5, 33, 34, 80)}
    assert posts == expected and len(posts) == 230 - 5  # repost, 3 rejects and one repeat
    rejected = dict(
        con.execute("SELECT reason, count(*) FROM rejected_records WHERE source = 'author' GROUP BY 1").fetchall()
    )
    assert rejected == {"invalid_created_at": 1, "invalid_uri:post.uri": 1, "created_at_out_of_range": 1}
    assert con.execute("SELECT author_did, author_handle, reposts_skipped FROM author_scans").fetchall() == [
        (DID, HANDLE, 1)
    ]
    report = con.execute(
        "SELECT uri, toxicity_rank, link FROM marts.author_toxicity_report ORDER BY toxicity_rank"
    ).fetchall()
    assert len(report) == len(posts)
    top_two = {uri for uri, rank, _ in report[:2]}
    assert top_two == {items[i]["post"]["uri"] for i in TOXIC}
    assert all(link == post_link(uri) for uri, _, link in report)
    con.close()
    assert first["author_did"] == DID and first["posts"] == len(posts)
    assert [m["rank"] for m in first["most_toxic"]] == list(range(1, 11))


@pytest.mark.integration
def test_rescan_is_idempotent_reuses_daily_scores_and_drops_deleted_posts(db, capsys):
    items = history(150)
    with AppViewServer(author_feeds={DID: items}, handles={HANDLE: DID}) as server:
        main(["scan-author", HANDLE, "--appview", f"http://{server.host}", "--json"])
    con = duckdb.connect(str(db))
    before = con.execute("SELECT uri, status, prob_toxicity FROM author_toxicity_scores ORDER BY uri").fetchall()
    # The daily pipeline has scored one of these posts with the same scorer version: a scan must copy it.
    scorer = make_scorer("profanity-check")
    copied_uri = items[40]["post"]["uri"]
    con.execute(
        """INSERT INTO toxicity_scores (uri, scorer, scorer_version, status, scored_at, partition_date, prob_toxicity)
           VALUES ($uri, $scorer, $version, 'ok', now(), DATE '2023-05-01', 0.4242)""",
        {"uri": copied_uri, "scorer": scorer.name, "version": scorer.version},
    )
    con.execute("DELETE FROM author_toxicity_scores WHERE uri = $uri", {"uri": copied_uri})
    con.close()
    deleted = items.pop(3)
    with AppViewServer(author_feeds={DID: items}, handles={HANDLE: DID}) as server:
        main(["scan-author", HANDLE, "--appview", f"http://{server.host}", "--json"])
    capsys.readouterr()
    con = duckdb.connect(str(db), read_only=True)
    after = dict(con.execute("SELECT uri, prob_toxicity FROM author_toxicity_scores").fetchall())
    assert deleted["post"]["uri"] not in after
    assert after[copied_uri] == pytest.approx(0.4242)
    unchanged = {uri: p for uri, _, p in before if uri not in (copied_uri, deleted["post"]["uri"])}
    assert {uri: after[uri] for uri in unchanged} == pytest.approx(unchanged)
    assert con.execute("SELECT count(*), count(DISTINCT uri) FROM author_posts").fetchall() == [(len(after),) * 2]
    assert con.execute("SELECT count(*) FROM author_scans").fetchall() == [(1,)]
    con.close()


@pytest.mark.integration
def test_scan_author_unknown_account_fails_clearly(db, capsys):
    with AppViewServer(author_feeds={}, handles={}) as server:
        code = main(["scan-author", "nobody.bsky.social", "--appview", f"http://{server.host}"])
    assert code == 1
    assert "Unable to resolve handle" in capsys.readouterr().err
    assert main(["scan-author", "not a handle"]) == 2


def test_a_scan_reports_its_progress_in_items(tmp_path):
    """A long history is many pages at the AppView's rate: the scan logs how far it got and how long it took."""
    from bsky_warehouse.authors import spool_author_feed
    from bsky_warehouse.resources.appview import AppViewClient

    logged: list[str] = []
    server = AppViewServer(author_feeds={DID: history()}, handles={HANDLE: DID})
    with server, AppViewClient(host=server.host, secure=False) as client:
        scan = spool_author_feed(client, HANDLE, tmp_path / "spool.jsonl", log=logged.append)
    assert scan.stats.items > 200
    assert logged[-1].startswith(f"scan {HANDLE}: {scan.stats.items} items") and " done in " in logged[-1]
