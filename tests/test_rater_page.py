"""The rater page: its pure pieces (scales, validation, rows, the next topic), its HTTP answers on the audit
tests' hand-built warehouse, and a headless Chromium session against the real server on a warehouse built by
the real Dagster assets: rating with the keyboard, reloading, an invalid rating, and the rater's audit."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import httpx
import pytest

from bsky_warehouse.judgements import TASKS, parse_value
from bsky_warehouse.rater import core
from bsky_warehouse.rater.server import RaterSettings, create_app
from bsky_warehouse.resources.warehouse import WarehouseResource
from tests.factories import uri
from tests.test_audit import LABELS, SCORER, VERSION
from tests.test_audit import db as audited_db  # noqa: F401  (the audit tests' warehouse, a fixture)

with warnings.catch_warnings():  # Starlette would rather have httpx2; httpx is what the project pins
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

AT = datetime(2024, 3, 10, 12, tzinfo=UTC)


# --- pure pieces -------------------------------------------------------------------------------------------------


def test_every_task_has_a_scale_whose_every_choice_the_file_import_accepts():
    assert set(core.SCALES) == set(TASKS) == set(core.QUESTIONS)
    for task, scale in core.SCALES.items():
        keys = [c.key for c in scale]
        assert len(keys) == len(set(keys)) and core.SKIP_KEY not in keys and "a" not in keys, task
        for choice in scale:
            assert core.parse_rating(task, choice.value) == parse_value(task, choice.value)
    assert [c.value for c in core.SCALES["toxicity"]] == ["0", "1", "2", "3", "4", "-1"]


@pytest.mark.parametrize(
    ("task", "raw", "reason"),
    [("toxicity", "7", "out_of_range"), ("toxicity", "2.5", "not_an_integer"), ("toxicity", True, "not_an_integer"),
     ("toxicity", "", "missing_value"), ("toxicity", None, "one value"), ("toxicity", [1], "one value"),
     ("sociopolitical", "maybe", "unknown_value"), ("ideology", "centrist", "unknown_value")],
)  # fmt: skip
def test_a_value_off_the_scale_is_refused_with_the_reason(task, raw, reason):
    with pytest.raises(core.RatingError, match=reason):
        core.parse_rating(task, raw)


def test_ratings_become_the_rows_a_file_import_would_hold():
    assert core.parse_rating("toxicity", "-1") == (-1.0, None)
    assert core.parse_rating("sociopolitical", "yes") == (1.0, "yes")
    assert core.parse_rating("ideology", "left") == (None, "left")
    assert core.judgement_row("at://d/app.bsky.feed.post/k", "ann", "toxicity", 3.0, None, AT) == {
        "uri": "at://d/app.bsky.feed.post/k", "rater": "ann", "task": "toxicity", "value": 3.0, "label": None,
        "source_file": "rater_page", "line_no": None, "imported_at": AT,
    }  # fmt: skip


def test_next_topic_is_the_least_judged_with_posts_left():
    topics = [core.TopicProgress(0, "a", 2, 5), core.TopicProgress(1, "b", 1, 0), core.TopicProgress(2, "c", 2, 1)]
    assert core.next_topic(topics).topic_id == 0  # topic 1 has nothing left; 0 and 2 tie, the lower id first
    assert core.next_topic([*topics, core.TopicProgress(3, "d", 0, 1)]).topic_id == 3
    assert core.next_topic([core.TopicProgress(0, "a", 3, 0)]) is None


def test_links_are_built_as_the_dbt_macro_builds_them():
    assert core.bsky_link(uri("p4")) == "https://bsky.app/profile/did:plc:author1/post/p4"


# --- the HTTP answers, on the audit tests' warehouse ---------------------------------------------------------------


@pytest.fixture
def wh(tmp_path: Path, audited_db: str) -> WarehouseResource:  # noqa: F811
    """A copy of the audit tests' warehouse (posts p1-p8, topics 0 and 1, scorer s, alice's audit built), with p2
    made a reply to p1."""
    path = tmp_path / "wh.duckdb"
    shutil.copy(audited_db, path)
    warehouse = WarehouseResource(path=str(path), lock_timeout_s=5)
    with warehouse.connect() as con:
        con.execute("UPDATE cleaned_posts SET reply_parent_uri = $p WHERE uri = $u", {"p": uri("p1"), "u": uri("p2")})
    return warehouse


def client(wh: WarehouseResource, rater: str = "carol", task: str = "toxicity", system: str | None = SCORER,
           target: int = 3) -> TestClient:  # fmt: skip
    settings = RaterSettings(rater=rater, task=task, topic_model_version=VERSION, warehouse=wh, system=system,
                             target=target)  # fmt: skip
    return TestClient(create_app(settings))


def rows(wh: WarehouseResource, rater: str = "carol") -> list[tuple]:
    with wh.read_only() as con:
        return con.execute(
            """SELECT uri, task, value, label, source_file, line_no FROM human_judgements WHERE rater = $r
               ORDER BY imported_at""",
            {"r": rater},
        ).fetchall()


def test_the_page_draws_by_topic_writes_at_once_and_never_shows_a_judged_post(wh):
    page = client(wh)
    assert page.get("/").status_code == 200 and "window.rater" in page.get("/").text
    state = page.get("/api/state").json()
    # scorer s answered p1-p6 and p8, but p8 has no topic: three posts per topic.
    assert [(t["topic_id"], t["label"], t["judged"], t["remaining"]) for t in state["topics"]] == [
        (0, LABELS[0], 0, 3), (1, LABELS[1], 0, 3)]  # fmt: skip
    assert state["post"]["topic_id"] == 0 and state["n_judged"] == 0 and not state["audit_ready"]
    seen = []
    for value in ["0", "3", "-1", "4"]:
        post = state["post"]
        seen.append(post["uri"])
        answer = page.post("/api/judgements", json={"uri": post["uri"], "value": value})
        assert answer.status_code == 200, answer.text
        state = answer.json()
        assert state["saved"]["replaced"] is False
    # Topics alternate (the least judged first), and nothing is shown twice.
    assert len(set(seen)) == 4 and state["post"]["uri"] not in seen
    assert [t["judged"] for t in state["topics"]] == [2, 2] and state["n_judged"] == 4 and state["audit_ready"]
    assert [(r[0], r[2], r[4], r[5]) for r in rows(wh)] == [
        (seen[0], 0.0, "rater_page", None), (seen[1], 3.0, "rater_page", None), (seen[2], -1.0, "rater_page", None),
        (seen[3], 4.0, "rater_page", None)]  # fmt: skip
    # A re-rating replaces: still one row for the post.
    again = page.post("/api/judgements", json={"uri": seen[0], "value": "2"}).json()
    assert again["saved"]["replaced"] is True
    assert [r[2] for r in rows(wh) if r[0] == seen[0]] == [2.0]
    # A skipped post is left for later, not judged.
    skipped = again["post"]["uri"]
    after_skip = page.get("/api/state", params={"skip": skipped}).json()
    assert after_skip["post"]["uri"] not in {skipped, *seen}
    # Every post judged: none left to show.
    for post_uri in {uri(p) for p in ("p1", "p2", "p3", "p4", "p5", "p6")} - set(seen):
        assert page.post("/api/judgements", json={"uri": post_uri, "value": "1"}).status_code == 200
    assert page.get("/api/state").json()["post"] is None


def test_the_post_is_shown_as_a_reader_sees_it(wh):
    with wh.read_only() as con:
        view = core.post_view(con, uri("p2"), core.TopicProgress(0, LABELS[0], 0, 1))
    assert view["text"] == "post p2" and view["author_did"] == "did:plc:author1"
    assert view["link"] == "https://bsky.app/profile/did:plc:author1/post/p2"
    assert view["reply_to"]["text"] == "post p1" and view["reply_to"]["link"].endswith("/post/p1")
    assert view["topic_label"] == LABELS[0]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [({"uri": uri("p1"), "value": "7"}, 422, "out_of_range"), ({"uri": uri("p1"), "value": "x"}, 422, "not_an_integer"),
     ({"uri": uri("p1"), "value": None}, 422, "one value"), ({"uri": uri("p1")}, 422, "needs `uri` and `value`"),
     ({"uri": uri("nope"), "value": "1"}, 404, "not a post this page shows"),
     ({"uri": uri("p7"), "value": "1"}, 404, "without a topic"), ({"uri": 5, "value": "1"}, 404, "`uri` is missing"),
     ([1, 2], 422, "needs `uri` and `value`")],
)  # fmt: skip
def test_invalid_input_is_refused_with_a_message_and_nothing_is_written(wh, body, status, message):
    answer = client(wh).post("/api/judgements", json=body)
    assert answer.status_code == status and message in answer.json()["error"], answer.text
    assert rows(wh) == []


def test_a_body_that_is_not_json_and_an_unknown_address_are_4xx(wh):
    page = client(wh)
    answer = page.post("/api/judgements", content=b"value=3", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and "JSON" in answer.json()["error"]
    assert page.get("/api/nothing").status_code == 404
    assert page.get("/api/judgements").status_code == 405


def test_a_rating_waits_for_a_job_holding_the_warehouse_and_says_so_if_it_cannot(wh):
    """The daily job holds the warehouse lock while it writes: a rating waits for it, and past the timeout is
    refused as busy (503) with nothing written, never half-written."""
    page = client(WarehouseResource(path=wh.path, lock_timeout_s=0.5))
    post = page.get("/api/state").json()["post"]
    with wh.lock():
        busy = page.post("/api/judgements", json={"uri": post["uri"], "value": "1"})
    assert busy.status_code == 503 and "busy" in busy.json()["error"] and rows(wh) == []
    held = threading.Event()

    def job() -> None:
        with wh.lock():
            held.set()
            time.sleep(0.3)

    writer = threading.Thread(target=job)
    writer.start()
    held.wait(5)
    started = time.monotonic()
    waited = client(wh).post("/api/judgements", json={"uri": post["uri"], "value": "1"})
    writer.join()
    assert waited.status_code == 200 and time.monotonic() - started >= 0.1
    assert [r[2] for r in rows(wh)] == [1.0]


def test_labels_for_the_yes_no_and_ideology_tasks(wh):
    social = client(wh, task="sociopolitical", system="labeler:import/m")
    post = social.get("/api/state").json()["post"]
    assert social.post("/api/judgements", json={"uri": post["uri"], "value": "yes"}).status_code == 200
    ideology = client(wh, task="ideology", system=None)
    state = ideology.get("/api/state").json()
    assert state["audit_note"].startswith("the audit covers")
    assert ideology.post("/api/judgements", json={"uri": state["post"]["uri"], "value": "left"}).status_code == 200
    assert sorted((r[1], r[2], r[3]) for r in rows(wh)) == [("ideology", None, "left"), ("sociopolitical", 1.0, "yes")]
    assert ideology.get("/api/audit").status_code == 409
    refused = ideology.post("/api/audit/refresh")
    assert refused.status_code == 409 and "not ideology" in refused.json()["error"]


def test_the_audit_shows_over_and_under_sensitive_topics_with_examples(wh):
    assert "rate 3 more posts" in client(wh).get("/api/audit").json()["error"]
    audit = client(wh, rater="alice", target=2).get("/api/audit")
    assert audit.status_code == 200, audit.text
    view = audit.json()
    # See test_audit: the system is over-sensitive on cats (p1), under-sensitive on politics (p4).
    assert [t["topic_id"] for t in view["over_sensitive"]] == [0]
    assert [e["uri"] for e in view["over_sensitive"][0]["examples"]] == [uri("p1")]
    assert [e["uri"] for e in view["under_sensitive"][0]["examples"]] == [uri("p4")]
    assert [t["topic_id"] for t in view["topics"]] == [1, 0] and view["calibration"] is None
    # A rater the marts do not hold yet is told to refresh.
    with wh.connect() as con:
        for name in ("p1", "p2"):
            con.execute("INSERT INTO human_judgements VALUES ($u, 'dana', 'toxicity', 1, NULL, 'rater_page', NULL, $a)",
                        {"u": uri(name), "a": AT})  # fmt: skip
    missing = client(wh, rater="dana", target=2).get("/api/audit")
    assert missing.status_code == 409 and "refresh" in missing.json()["error"]


# --- a real browser against the real server, on a warehouse built by the Dagster assets ----------------------------

# 15 March (23 posts) for the browser session; 16 March (177) gives a coder enough posts for a calibration.
WINDOW = (date(2024, 3, 15), date(2024, 3, 17))
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
TARGET = 6


def audit_upstream_assets() -> list[str]:
    """Everything the audit marts read, from the asset graph (labels need configuration and stay out)."""
    from dagster import AssetSelection

    from bsky_warehouse.definitions import defs
    from bsky_warehouse.pipeline import NEEDS_CONFIGURATION

    # archive_ingest writes raw_posts, post_deletions and rejected_records in one step: all three or none.
    selection = AssetSelection.assets("audit_by_topic").upstream().required_multi_asset_neighbors()
    names = (key.to_user_string() for key in selection.resolve(defs.resolve_asset_graph()))
    return sorted(name for name in names if name not in NEEDS_CONFIGURATION)


@pytest.fixture(scope="module")
def dagster_warehouse(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two sample days ingested, scored (profanity-check), embedded and put in three topics, through Dagster."""
    from dagster import DagsterInstance

    from bsky_warehouse.partitions import DayWindow
    from bsky_warehouse.pipeline import run_window
    from bsky_warehouse.project import SAMPLE_DIR

    db = str(tmp_path_factory.mktemp("rater") / "wh.duckdb")
    result = run_window(
        DayWindow(*WINDOW), DagsterInstance.ephemeral(), db_path=db, archive_dir=str(SAMPLE_DIR),
        assets=audit_upstream_assets(), run_config={"ops": {"post_topics": {"config": {"n_topics": 3}}}},
        raise_on_error=False, log_level="WARNING", checks=False,
    )  # fmt: skip
    assert result["success"], result["failures"]
    return db


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def rater_server(tmp_path: Path, dagster_warehouse: str):
    """`bsky-warehouse rate` as a coder starts it, on a free port, with its own Dagster run history."""
    port = free_port()
    env = {**os.environ, "BSKY_WAREHOUSE_DB": dagster_warehouse, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bsky_warehouse.cli", "rate", "--rater", "coder1", "--task", "toxicity",
         "--port", str(port), "--target", str(TARGET)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        try:
            if httpx.get(f"{url}/api/state", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
        time.sleep(0.5)
    yield {"url": url, "port": port, "dagster_home": tmp_path / "dagster_home", "log": tmp_path / "server.log"}
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture
def browser(tmp_path: Path):
    """Headless Chromium, Debian's, which the Makefile installs: missing, the test fails rather than skips."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: `make test` installs them (apt-get install chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,900", f"--user-data-dir={tmp_path / 'chromium-profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.integration
def test_a_coder_rates_with_the_keyboard_and_sees_their_audit_in_chromium(rater_server, browser, dagster_warehouse):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(rater_server["url"] + "/")

    def shown() -> str:
        wait.until(lambda d: d.execute_script("return window.rater && document.getElementById('post').dataset.uri"))
        return browser.execute_script("return document.getElementById('post').dataset.uri")

    def rate_with(key: str) -> str:
        before = shown()
        browser.find_element(By.TAG_NAME, "body").send_keys(key)
        wait.until(lambda d: d.find_element(By.ID, "message").text.startswith("saved")
                   and d.execute_script("return document.getElementById('post').dataset.uri") != before)  # fmt: skip
        return before

    keys = ["0", "4", "u", "2", "1", "3"]
    rated = [rate_with(key) for key in keys[:4]]
    browser.refresh()
    assert shown() not in rated
    rated += [rate_with(key) for key in keys[4:]]
    assert len(set(rated)) == len(rated) == TARGET
    con = duckdb.connect(dagster_warehouse, read_only=True)
    try:
        stored = con.execute(
            "SELECT uri, value, source_file FROM human_judgements WHERE rater = 'coder1' AND task = 'toxicity'"
        ).fetchall()
        topics = dict(con.execute("SELECT uri, topic_id FROM post_topics").fetchall())
    finally:
        con.close()
    expected_values = {"0": 0.0, "4": 4.0, "u": -1.0, "2": 2.0, "1": 1.0, "3": 3.0}
    assert sorted(stored) == sorted((u, expected_values[k], "rater_page") for u, k in zip(rated, keys, strict=True))
    assert len({topics[u] for u in rated}) == 3  # stratified: every topic was drawn from
    # A reload shows nothing already judged; the per-topic progress adds up.
    browser.refresh()
    assert shown() not in rated
    judged_cells = browser.find_elements(By.CSS_SELECTOR, "#topics tbody tr td:nth-child(2)")
    assert sum(int(c.text) for c in judged_cells) == TARGET and browser.find_element(By.ID, "count").text == "6"
    # Not a rating: refused, and the page says why.
    browser.execute_script("window.rater.submit('7')")
    wait.until(lambda d: "out_of_range" in d.find_element(By.ID, "message").text)
    assert "error" in browser.find_element(By.ID, "message").get_attribute("class")
    # Enough judgements: the audit opens; coder1 is not in the marts yet, so refresh runs the audit job.
    wait.until(lambda d: d.find_element(By.ID, "audit").is_displayed())
    wait.until(lambda d: "refresh" in d.find_element(By.ID, "audit-body").text.lower())
    browser.find_element(By.ID, "refresh").click()
    WebDriverWait(browser, 600).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#audit-topics tr td") or d.find_elements(By.ID, "audit-message")
    )
    assert not browser.find_elements(By.ID, "audit-message"), browser.find_element(By.ID, "audit-message").text
    audit_rows = browser.find_elements(By.CSS_SELECTOR, "#audit-topics tr")[1:]
    assert 1 <= len(audit_rows) <= 3
    assert "scorer:profanity-check against you" in browser.find_element(By.ID, "audit-body").text
    # The refresh is a run in the rater's Dagster run history that materialized the audit marts.
    from dagster import AssetKey, DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(rater_server["dagster_home"])))
    event = instance.get_latest_materialization_event(AssetKey("audit_by_topic"))
    assert event is not None and instance.get_run_by_id(event.run_id).is_success


@pytest.mark.integration
def test_a_refresh_with_enough_judgements_fits_the_coders_calibration_as_a_recorded_run(dagster_warehouse, tmp_path):
    """From MIN_JUDGEMENTS usable ratings on, "refresh" also runs the rater_calibration job, recorded in the
    page's run history, and the audit then carries the coder's calibration."""
    from dagster import DagsterInstance

    from bsky_warehouse.assets.topics import current_version
    from bsky_warehouse.calibration import MIN_JUDGEMENTS

    home = tmp_path / "dagster_home"
    home.mkdir()
    DagsterInstance.from_config(str(home)).dispose()
    warehouse = WarehouseResource(path=dagster_warehouse, lock_timeout_s=60)
    with warehouse.read_only() as con:
        version = current_version(con)
    settings = RaterSettings(rater="coder2", task="toxicity", topic_model_version=version, warehouse=warehouse,
                             system="scorer:profanity-check", target=MIN_JUDGEMENTS,
                             instance=lambda: DagsterInstance.from_config(str(home)))  # fmt: skip
    page = TestClient(create_app(settings))
    state = page.get("/api/state").json()
    rated = []
    while state["n_judged"] < MIN_JUDGEMENTS:
        rated.append(state["post"]["uri"])
        answer = page.post("/api/judgements", json={"uri": rated[-1], "value": str(len(rated) % 5)})
        assert answer.status_code == 200, answer.text
        state = answer.json()
    assert len(set(rated)) == MIN_JUDGEMENTS and state["audit_ready"]

    refreshed = page.post("/api/audit/refresh")
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.json()
    jobs = [("warehouse_daily", True), ("rater_calibration", True)]
    assert [(run["job"], run["success"]) for run in body["runs"]] == jobs
    assert body["calibration"] is not None and body["calibration"]["n_judgements"] == MIN_JUDGEMENTS
    with DagsterInstance.from_config(str(home)) as instance:
        recorded = {run.run_id: (run.job_name, run.is_success) for run in instance.get_runs()}
    assert [recorded[run["run_id"]] for run in body["runs"]] == jobs
    # The page's audit reads the same calibration afterwards.
    assert page.get("/api/audit").json()["calibration"]["model_version"] == body["calibration"]["model_version"]
