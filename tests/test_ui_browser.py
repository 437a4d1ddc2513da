"""The web console in a real browser (headless Chromium driven by selenium) against a real
broker: a dead letter replayed from its page runs again, the pipeline page shows a stage
turning stuck and new dead letters without a reload, a run's timeline shows its retry, and
the designer flags a broken edit, accepts the fixed one and edits tasks picked on it.

Screenshots of each page go to ``build/ui-screenshots/`` (or ``$STREAMTASK_UI_SCREENSHOTS``)
as test artefacts. Needs Debian's ``chromium`` and ``chromium-driver``: ``make test``
installs them (``.ci/chromium``); without them these tests are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from streamtask import App, Worker, WorkerSettings
from streamtask.dev.broker import free_port
from streamtask.kafka.topics import ensure
from streamtask.ui import ConsoleSettings, create_app
from streamtask.ui.letters import LetterIndex
from tests.apps import observed_app
from tests.apps.dlq_app import Faulty, build, fill
from tests.inprocess import run_worker, send_all
from tests.test_ui_runs import flaky, run_with_trail

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "order_fulfillment.json"
SHOTS = Path(os.environ.get("STREAMTASK_UI_SCREENSHOTS", ROOT / "build" / "ui-screenshots"))
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="chromium and chromedriver are not installed (`bash .ci/chromium` installs "
           "Debian's chromium and chromium-driver; `make test` runs it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="streamtask-ui-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Served:
    """The console served by uvicorn on a free port, in a thread of this process."""

    def __init__(self, faulty: Faulty | observed_app.Observed | App, **settings: Any) -> None:
        app = faulty if isinstance(faulty, App) else faulty.app
        self.asgi = create_app(app, ConsoleSettings(**settings))
        self.index: LetterIndex = self.asgi.state.console.index
        self.port = free_port()
        # Open pages keep their event streams: stop without waiting for them to close.
        self.server = uvicorn.Server(uvicorn.Config(
            self.asgi, host="127.0.0.1", port=self.port, log_level="warning",
            timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        wait_until(lambda: self.server.started and self.index.ready, "the console to start")
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def wait_until(condition: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def shot(driver: WebDriver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def wait(driver: WebDriver, timeout: float = 90) -> WebDriverWait[WebDriver]:
    """Polls until the condition holds; a page that re-renders (the diagrams redraw on each
    check) can turn an element stale between finding and reading it: that poll just retries."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,))


def type_into(driver: WebDriver, element: Any, text: str) -> None:
    """Replace the field's text the way a user does: select all, then type."""
    element.click()
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


@pytest.mark.timeout(300)
def test_a_dead_letter_replayed_from_its_page_runs(browser: WebDriver, kafka: Any,
                                                   unique: str) -> None:
    faulty = build(kafka.bootstrap, unique)
    fill(faulty, "work", [{"n": n, "error": "KeyError" if n == 1 else "ValueError"}
                          for n in range(5)])
    with Served(faulty) as served:
        browser.get(served.url("/letters/work"))
        rows = browser.find_elements(By.CSS_SELECTOR, "tr.letter")
        assert len(rows) == 5
        shot(browser, "dead-letters")
        chosen = next(r for r in rows if r.get_attribute("data-error") == "KeyError")
        key = chosen.get_attribute("data-key")
        chosen.find_element(By.CSS_SELECTOR, "a.open").click()
        assert "broken while handling n=1" in browser.find_element(By.ID, "error-line").text
        assert '"n": 1' in browser.find_element(By.ID, "payload").text
        faulty.broken = False  # the bug is fixed: now the replay should run through
        browser.find_element(By.ID, "replay-one").click()
        wait(browser).until(expected_conditions.alert_is_present()).accept()
        result = browser.find_element(By.ID, "replay-result")
        wait(browser, 120).until(lambda _: result.get_attribute("data-finished") == "true")
        assert result.text.startswith("replayed 1, skipped (filter) 0, parked 0"), result.text
        shot(browser, "dead-letter-replayed")
    run_worker(faulty.app, ["work"], max_tasks=1, idle_timeout=5)
    assert [run.task_id for run in faulty.succeeded()] == [key]


@pytest.mark.timeout(300)
def test_the_pipeline_page_shows_new_dead_letters_without_a_reload(
        browser: WebDriver, kafka: Any, unique: str) -> None:
    faulty = build(kafka.bootstrap, unique, stages=("work", "audit"))
    send_all(faulty.app, "work", [])  # creates the topics: the DLQs exist, empty
    with Served(faulty) as served:
        browser.get(served.url("/pipeline"))
        stage = browser.find_element(By.CSS_SELECTOR, 'g.stage[data-stage="work"]')
        wait(browser).until(lambda d: d.find_element(By.ID, "pipeline-diagram")
                            .get_attribute("data-updated"))
        assert "dead" not in (stage.get_attribute("class") or "")
        fill(faulty, "work", [{"n": n} for n in range(3)])  # three dead letters arrive
        wait(browser, 120).until(lambda _: "dead" in (stage.get_attribute("class") or ""))
        badge = stage.find_element(By.CSS_SELECTOR, "text.count")
        wait(browser, 90).until(lambda _: badge.text == "3 dead")
        cell = browser.find_element(By.CSS_SELECTOR, 'tr[data-stage="work"] .dead-count')
        assert cell.text == "3"
        audit = browser.find_element(By.CSS_SELECTOR, 'g.stage[data-stage="audit"]')
        assert "dead" not in (audit.get_attribute("class") or "")
        shot(browser, "pipeline")
        stage.click()
        wait(browser).until(lambda d: d.current_url.endswith("/stages/work"))
        assert len(browser.find_elements(By.CSS_SELECTOR, "tr.letter")) == 3
        shot(browser, "stage")


@pytest.mark.timeout(300)
def test_the_pipeline_page_shows_a_stage_turning_stuck(
        browser: WebDriver, kafka: Any, unique: str) -> None:
    observed = observed_app.build(kafka.bootstrap, unique)
    app = observed.app
    ensure(app)
    worker = Worker(app, settings=WorkerSettings(concurrency=1, commit_interval=0.2))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        with Served(observed, status_interval=1.0) as served:
            browser.get(served.url("/pipeline"))
            stage = browser.find_element(By.CSS_SELECTOR, 'g.stage[data-stage="work"]')
            wait(browser, 120).until(lambda _: stage.get_attribute("data-verdict") == "healthy")
            with app.producer() as producer:  # one task hangs; the rest queue behind it
                producer.send("work", {"n": 0, "hang": True})
                producer.send_many("work", [{"n": n} for n in range(1, 5)])
            assert observed.hanging.wait(120), "the hanging task never started"
            wait(browser, 120).until(lambda _: stage.get_attribute("data-verdict") == "stuck")
            assert "stuck" in (stage.get_attribute("class") or "").split()
            row = browser.find_element(By.CSS_SELECTOR, 'tr[data-stage="work"]')
            assert row.find_element(By.CSS_SELECTOR, ".verdict").text == "stuck"
            assert row.find_element(By.CSS_SELECTOR, ".workers").text == "1"
            assert row.find_element(By.CSS_SELECTOR, ".lag").text == "5"
            shot(browser, "pipeline-stuck")
    finally:
        observed.gate.set()
        worker.stop()
        thread.join(60)


@pytest.mark.timeout(300)
def test_the_designer_flags_a_broken_edit_and_accepts_the_fixed_one(
        browser: WebDriver, kafka: Any, unique: str, tmp_path: Path) -> None:
    faulty = build(kafka.bootstrap, unique)
    definition = json.loads(EXAMPLE.read_text())
    with Served(faulty, workflow=EXAMPLE, designer_dir=tmp_path) as served:
        browser.get(served.url("/designer"))
        status = browser.find_element(By.ID, "check-status")
        assert status.text == "check passed"
        editor = browser.find_element(By.ID, "definition")
        definition["tasks"][1]["retryLogic"] = "SOMETIMES"
        type_into(browser, editor, json.dumps(definition, indent=1))
        wait(browser).until(lambda _: status.text == "problems found")
        problems = browser.find_elements(By.CSS_SELECTOR, "#problems li.problem")
        assert any("retryLogic 'SOMETIMES'" in p.text for p in problems)
        flagged = browser.find_elements(By.CSS_SELECTOR, "g.stage.flagged")
        assert [g.get_attribute("data-stage") for g in flagged] == ["process_payment"]
        shot(browser, "designer-broken")
        definition["tasks"][1]["retryLogic"] = "EXPONENTIAL_BACKOFF"
        type_into(browser, editor, json.dumps(definition, indent=1))
        wait(browser).until(lambda _: status.text == "check passed")
        assert browser.find_elements(By.CSS_SELECTOR, "g.stage.flagged") == []
        assert browser.find_elements(By.CSS_SELECTOR, "#problems li") == []
        type_into(browser, browser.find_element(By.ID, "save-name"), "fixed.json")
        browser.find_element(By.ID, "save").click()
        saved = browser.find_element(By.ID, "save-result")
        wait(browser).until(lambda _: saved.text.startswith("saved"))
        shot(browser, "designer")
    assert json.loads((tmp_path / "fixed.json").read_text()) == definition


@pytest.mark.timeout(300)
def test_the_designer_edits_tasks_picked_on_the_diagram(
        browser: WebDriver, kafka: Any, unique: str, tmp_path: Path) -> None:
    faulty = build(kafka.bootstrap, unique)
    with Served(faulty, workflow=EXAMPLE, designer_dir=tmp_path) as served:
        browser.get(served.url("/designer"))
        status = browser.find_element(By.ID, "check-status")
        editor = browser.find_element(By.ID, "definition")
        wait(browser).until(lambda _: status.get_attribute("data-checked"))

        def edited() -> dict[str, Any]:
            return dict(json.loads(editor.get_attribute("value") or "{}"))

        def stages() -> list[str | None]:
            return [g.get_attribute("data-stage")
                    for g in browser.find_elements(By.CSS_SELECTOR, "#design-diagram g.stage")]

        browser.find_element(By.CSS_SELECTOR, 'g.stage[data-stage="process_payment"]').click()
        panel = browser.find_element(By.ID, "task-panel")
        assert panel.is_displayed()
        type_into(browser, panel.find_element(By.NAME, "retryCount"), "5")
        Select(panel.find_element(By.NAME, "retryLogic")).select_by_visible_text(
            "EXPONENTIAL_BACKOFF")
        type_into(browser, panel.find_element(By.NAME, "retryDelaySeconds"), "2")
        type_into(browser, panel.find_element(By.NAME, "name"), "charge_card")
        browser.find_element(By.ID, "task-apply").click()
        wait(browser).until(lambda _: "charge_card" in stages())
        charge = edited()["tasks"][1]
        assert charge == {**charge, "name": "charge_card", "retryCount": 5,
                          "retryLogic": "EXPONENTIAL_BACKOFF", "retryDelaySeconds": 2}
        assert status.text == "check passed"
        type_into(browser, panel.find_element(By.NAME, "retryDelaySeconds"), "-1")
        browser.execute_script("arguments[0].noValidate = true", panel)
        browser.find_element(By.ID, "task-apply").click()  # a bad value: flagged on the box
        wait(browser).until(lambda _: status.text == "problems found")
        flagged = browser.find_elements(By.CSS_SELECTOR, "g.stage.flagged")
        assert [g.get_attribute("data-stage") for g in flagged] == ["charge_card"]
        type_into(browser, panel.find_element(By.NAME, "retryDelaySeconds"), "2")
        browser.find_element(By.ID, "task-apply").click()
        wait(browser).until(lambda _: status.text == "check passed")
        browser.find_element(By.ID, "task-add").click()
        wait(browser).until(lambda _: "new_task_1" in stages())
        assert [t["name"] for t in edited()["tasks"]][:3] == [
            "validate_order", "charge_card", "new_task_1"]
        shot(browser, "designer-task-panel")
        browser.find_element(By.ID, "task-remove").click()  # new_task_1 is now picked
        wait(browser).until(lambda _: "new_task_1" not in stages())
        assert status.text == "check passed"
        assert "new_task_1" not in (editor.get_attribute("value") or "")


@pytest.mark.timeout(300)
def test_a_runs_timeline_shows_its_retry(browser: WebDriver, kafka: Any, unique: str) -> None:
    app = flaky(kafka.bootstrap, unique)
    run_with_trail(app)
    with Served(app) as served:
        deadline = time.monotonic() + 120
        while True:  # the trail's last records may still be on their way
            browser.get(served.url("/runs?since=10m"))
            runs = browser.find_elements(By.CSS_SELECTOR, "tr.run")
            if len(runs) == 2 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(runs) == 2
        shot(browser, "runs")
        retried = next(r for r in runs if "dead" not in (r.get_attribute("class") or ""))
        retried.find_element(By.CSS_SELECTOR, "a").click()
        work = browser.find_element(By.CSS_SELECTOR, 'tr.task[data-stage="work"]')
        attempts = [a.text for a in work.find_elements(By.CSS_SELECTOR, "td > div.o")]
        assert attempts[0].startswith("#1 failed") and "busy on attempt 1" in attempts[0]
        assert attempts[1].startswith("#2 succeeded")
        bars = work.find_elements(By.CSS_SELECTOR, ".lane .bar")
        assert [b.get_attribute("class") for b in bars] == ["bar failed", "bar succeeded"]
        assert bars[0].location["x"] < bars[1].location["x"]  # the retry comes after
        store = browser.find_element(By.CSS_SELECTOR, 'tr.task[data-stage="store"]')
        assert store.find_element(By.CSS_SELECTOR, "div.o").text.startswith("#1 succeeded")
        shot(browser, "run")
