"""System tasks as Conductor defines them, without Kafka: HTTP against a local server
(2xx output shape, non-2xx fails to be retried), JSON_JQ_TRANSFORM, INLINE, LAMBDA,
SET_VARIABLE's bound and TERMINATE's statuses."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from streamtask import Task
from streamtask.conductor import systemtasks
from streamtask.conductor.systemtasks import HttpStatusError
from streamtask.retry import DeadLetter


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = 200 if body.get("ok") else 503
        answer = json.dumps({"echo": body, "auth": self.headers.get("X-Token")}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    httpd.shutdown()


def run(body: Any, inputs: dict[str, Any], ctx: dict[str, Any] | None = None) -> Any:
    ctx = ctx if ctx is not None else {"workflow": {"variables": {}}, "tasks": {}}
    return body(Task.new("t", inputs), inputs, ctx)


def test_http_returns_conductors_response_shape(server: str) -> None:
    output = run(systemtasks.http, {"http_request": {
        "uri": server, "method": "POST", "body": {"ok": True}, "headers": {"X-Token": 7}}})
    response = output["response"]
    assert response["statusCode"] == 200 and response["reasonPhrase"] == "OK"
    assert response["body"] == {"echo": {"ok": True}, "auth": "7"}
    assert response["headers"]["content-type"] == ["application/json"]


def test_http_non_2xx_fails_the_task_to_be_retried(server: str) -> None:
    with pytest.raises(HttpStatusError, match="503"):
        run(systemtasks.http, {"uri": server, "method": "POST", "body": {"ok": False}})
    with pytest.raises(DeadLetter, match="needs both uri and method"):
        run(systemtasks.http, {"http_request": {"uri": server}})


def test_jq_inline_and_lambda() -> None:
    assert run(systemtasks.json_jq_transform, {"xs": [1, 2], "queryExpression": ".xs[]"}) == \
        {"result": 1, "resultList": [1, 2]}
    assert run(systemtasks.inline, {"evaluatorType": "javascript", "n": 4,
                                    "expression": "$.n * 2"}) == {"result": 8}
    assert run(systemtasks.inline, {"evaluatorType": "value-param", "v": "x",
                                    "expression": "v"}) == {"result": "x"}
    assert run(systemtasks.lambda_body("return {twice: $.n * 2};"), {"n": 3}) == \
        {"result": {"twice": 6}}


def test_set_variable_is_bounded_and_terminate_checks_its_status() -> None:
    ctx: dict[str, Any] = {"workflow": {"variables": {"a": 1}, "status": "RUNNING"},
                           "tasks": {}}
    run(systemtasks.set_variable, {"b": 2}, ctx)
    assert ctx["workflow"]["variables"] == {"a": 1, "b": 2}
    with pytest.raises(DeadLetter, match="over Conductor's limit"):
        run(systemtasks.set_variable, {"big": "x" * 300_000}, ctx)
    assert ctx["workflow"]["variables"] == {"a": 1, "b": 2}  # rolled back
    with pytest.raises(DeadLetter, match="terminationStatus 'DONE' is not one of"):
        run(systemtasks.terminate, {"terminationStatus": "DONE"}, ctx)
    run(systemtasks.terminate, {"terminationStatus": "COMPLETED", "workflowOutput": 5}, ctx)
    assert ctx["workflow"]["status"] == "COMPLETED"
    assert ctx["workflow"]["output"] == {"output": 5}
