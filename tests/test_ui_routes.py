"""The web console's routes over HTTP, no broker: the designer checks what is typed, saves
only where it may, ``--read-only`` refuses every write, and a token keeps strangers out."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from streamtask.config import KafkaSettings
from streamtask.model.workflow import load_workflow, passthrough_handlers
from streamtask.ui import ConsoleSettings, create_app
from tests.test_cli_errors import assert_one_line_error, streamtask

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "order_fulfillment.json"
TOKEN = "s3cret-token-for-the-console"


def console(tmp_path: Path, **settings: object) -> TestClient:
    """A client of the console for the example workflow. Not entered as a context manager,
    so the dead-letter reader never starts: these routes need no broker."""
    definition = json.loads(EXAMPLE.read_text())
    app = load_workflow(definition, passthrough_handlers(definition),
                        kafka=KafkaSettings(bootstrap="127.0.0.1:1"))
    options = {"designer_dir": tmp_path, "workflow": EXAMPLE, **settings}
    return TestClient(create_app(app, ConsoleSettings(**options)))  # type: ignore[arg-type]


def broken(definition: dict[str, object]) -> str:
    tasks = json.loads(json.dumps(definition["tasks"]))
    tasks[0]["retryLogic"] = "SOMETIMES"
    return json.dumps({**definition, "tasks": tasks})


def test_pages_render(tmp_path: Path) -> None:
    client = console(tmp_path)
    for path, needle in [("/pipeline", "data-stage=\"validate_order\""),
                         ("/letters", "letter-counts"), ("/stages/validate_order", "retry"),
                         ("/letters/validate_order", "no dead letters"),
                         ("/designer", "check passed")]:
        page = client.get(path)
        assert page.status_code == 200, path
        assert needle in page.text, path
    assert client.get("/", follow_redirects=False).headers["location"] == "/pipeline"
    assert client.get("/stages/nope").status_code == 404
    assert client.get("/letters/nope/0/1").status_code == 404


def test_designer_flags_a_broken_definition_and_accepts_the_fixed_one(tmp_path: Path) -> None:
    client = console(tmp_path)
    definition = json.loads(EXAMPLE.read_text())
    bad = client.post("/api/designer/check", content=broken(definition)).json()
    assert not bad["ok"] and bad["svg"] is None
    assert any("SOMETIMES" in p["text"] and p["stages"] == ["validate_order"]
               for p in bad["problems"])
    assert client.post("/api/designer/check", content="{oops").json()["problems"][0][
        "text"].startswith("not valid JSON")
    good = client.post("/api/designer/check", content=json.dumps(definition)).json()
    assert good == {**good, "ok": True, "problems": []}
    assert 'data-stage="validate_order"' in good["svg"]


def test_designer_saves_inside_its_directory_only(tmp_path: Path) -> None:
    client = console(tmp_path)
    text = EXAMPLE.read_text()
    saved = client.post("/api/designer/save", json={"name": "flows/order.json",
                                                     "definition": text})
    assert saved.status_code == 200 and saved.json()["ok"]
    assert (tmp_path / "flows" / "order.json").read_text().strip() == text.strip()
    again = client.post("/api/designer/save", json={"name": "flows/order.json",
                                                     "definition": "{}"})
    assert again.status_code == 409 and again.json()["exists"]
    assert (tmp_path / "flows" / "order.json").read_text().strip() == text.strip()
    replaced = client.post("/api/designer/save", json={"name": "flows/order.json",
                                                        "definition": "{}", "overwrite": True})
    assert replaced.status_code == 200 and not replaced.json()["ok"]
    for name in ("../escape.json", "/tmp/abs.json", "notes.txt", "a/../../b.json"):
        refused = client.post("/api/designer/save", json={"name": name, "definition": "{}"})
        assert refused.status_code == 400, name
    assert not (tmp_path.parent / "escape.json").exists()
    form = client.post("/api/designer/save", data={"name": "x.json", "definition": "{}"})
    assert form.status_code == 415  # only JSON: a form on another site cannot post here


def test_read_only_refuses_every_write_and_hides_the_buttons(tmp_path: Path) -> None:
    client = console(tmp_path, read_only=True)
    replay = client.post("/api/replays", json={"stage": "validate_order"})
    assert replay.status_code == 403 and "read-only" in replay.json()["error"]
    save = client.post("/api/designer/save", json={"name": "x.json", "definition": "{}"})
    assert save.status_code == 403
    assert not (tmp_path / "x.json").exists()
    designer = client.get("/designer").text
    assert 'id="save"' not in designer and "read-only" in designer
    assert client.post("/api/designer/check", content=EXAMPLE.read_text()).json()["ok"]


def test_replay_requests_are_validated(tmp_path: Path) -> None:
    client = console(tmp_path)
    unknown = client.post("/api/replays", json={"stage": "nope"})
    assert unknown.status_code == 400
    bad_since = client.post("/api/replays", json={"stage": "validate_order", "since": "soon"})
    assert bad_since.status_code == 400 and "--since" in bad_since.json()["error"]
    bad_rate = client.post("/api/replays", json={"stage": "validate_order", "rate": -1})
    assert bad_rate.status_code == 400
    assert client.get("/api/replays/99").status_code == 404


def test_a_token_is_needed_for_every_request(tmp_path: Path) -> None:
    client = console(tmp_path, token=TOKEN)
    assert client.get("/pipeline").status_code == 401
    assert client.get("/static/console.css").status_code == 401
    assert client.post("/api/designer/check", content="{}").status_code == 401
    assert client.get("/pipeline", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/pipeline", headers={"Authorization": f"Bearer {TOKEN}"}).status_code \
        == 200
    link = client.get(f"/letters?token={TOKEN}", follow_redirects=False)
    assert link.status_code == 303 and link.headers["location"] == "/letters"
    assert "httponly" in link.headers["set-cookie"].lower()
    assert client.get("/designer").status_code == 200  # the cookie now carries it


@pytest.mark.parametrize(("args", "needle"), [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 lets other machines reach the console"),
    (["--host", "0.0.0.0", "--token", "short"], "at least 16 characters"),
    (["--workflow", "missing.json"], "workflow file 'missing.json' does not exist"),
])
def test_cli_refuses_unsafe_or_wrong_options_in_one_line(args: list[str], needle: str) -> None:
    assert_one_line_error(streamtask("ui", str(EXAMPLE), *args), needle)


@pytest.mark.timeout(60)
def test_without_a_broker_the_pages_still_answer_and_say_why() -> None:
    app = load_workflow(json.loads(EXAMPLE.read_text()),
                        passthrough_handlers(json.loads(EXAMPLE.read_text())),
                        kafka=KafkaSettings(bootstrap="127.0.0.1:1", connect_timeout=1))
    asgi = create_app(app, ConsoleSettings(status_interval=0.5))
    with TestClient(asgi) as client:
        assert client.get("/pipeline").status_code == 200  # never waits for the broker
        deadline = time.monotonic() + 30
        while "index-problem" not in (page := client.get("/letters").text):
            assert time.monotonic() < deadline, "no page ever said the broker is missing"
            time.sleep(0.2)
        assert "listing topics failed" in page or "no Kafka broker answered" in page
        runs = client.get("/runs")  # read from Kafka on request: says why it cannot
        assert runs.status_code == 503 and 'id="runs-error"' in runs.text
        stopped = time.monotonic()
    assert time.monotonic() - stopped < 20  # shutting down does not hang on the broker
