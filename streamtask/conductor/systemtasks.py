"""Conductor's system tasks that run inside a stage: what each does with its input.

Each is a :data:`~streamtask.conductor.context.Body`: it gets the task (its payload is the
resolved ``inputParameters``), that input, and the run's context, and returns the task's
output. Their inputs and outputs follow Conductor (see the README's workflow section):

* ``SET_VARIABLE`` writes each input key into ``workflow.variables`` (shallow, never deletes);
* ``TERMINATE`` ends the run with ``terminationStatus`` and ``workflowOutput``;
* ``JOIN`` outputs each joined task's output by reference name; ``EXCLUSIVE_JOIN`` (after a
  switch, where one case ran) the output of the first of ``joinOn``, then
  ``defaultExclusiveJoinTask``, that ran;
* ``INLINE`` (``evaluatorType`` javascript/graaljs or value-param) and ``LAMBDA``
  (``scriptExpression``) output ``{"result": ...}``;
* ``JSON_JQ_TRANSFORM`` outputs ``result`` (the first value) and ``resultList``;
* ``HTTP`` sends ``http_request`` (or the input itself) with httpx and outputs
  ``{"response": {statusCode, reasonPhrase, headers, body}}``; a non-2xx status fails the
  task, which is retried as its task definition says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from streamtask.conductor.context import RUNNING, Body
from streamtask.conductor.scripts import run_javascript, run_jq
from streamtask.model.envelope import Task
from streamtask.retry import DeadLetter

TERMINATION_STATUSES = ("COMPLETED", "FAILED", "TERMINATED")
VARIABLES_LIMIT = 256 * 1024
"""Bytes of JSON ``workflow.variables`` may take, as in Conductor."""
HTTP_EXTRA = "streamtask[http]"


class HttpStatusError(Exception):
    """An HTTP task got a non-2xx answer (retried like any failure)."""


def set_variable(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
    variables = {**ctx["workflow"]["variables"], **inputs}
    size = len(orjson.dumps(variables, option=orjson.OPT_NON_STR_KEYS))
    if size > VARIABLES_LIMIT:
        raise DeadLetter(f"SET_VARIABLE: the variables would take {size} bytes, over "
                         f"Conductor's limit of {VARIABLES_LIMIT}")
    ctx["workflow"]["variables"] = variables
    return {}


def terminate(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
    workflow = ctx["workflow"]
    status = inputs.get("terminationStatus")
    if status not in TERMINATION_STATUSES:
        raise DeadLetter(f"TERMINATE: terminationStatus {status!r} is not one of "
                         f"{', '.join(TERMINATION_STATUSES)}")
    output = inputs.get("workflowOutput")
    if workflow.get("status", RUNNING) == RUNNING:
        workflow["status"] = status
        workflow["output"] = dict(output) if isinstance(output, Mapping) else \
            ({} if output is None else {"output": output})
        if inputs.get("terminationReason"):
            workflow["reasonForIncompletion"] = inputs["terminationReason"]
    return {"output": workflow["output"]}


def joiner(join_on: tuple[str, ...]) -> Body:
    def join(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        return {ref: ctx["tasks"][ref]["output"] for ref in join_on if ref in ctx["tasks"]}
    return join


def exclusive_joiner(refs: tuple[str, ...]) -> Body:
    """EXCLUSIVE_JOIN after a switch: only one case ran, so its output is that of the first
    of ``joinOn`` (then ``defaultExclusiveJoinTask``) that ran in this run."""
    def exclusive_join(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        ran = next((ref for ref in refs if ref in ctx["tasks"]), None)
        return {} if ran is None else ctx["tasks"][ran]["output"]
    return exclusive_join


def inline(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
    evaluator = inputs.get("evaluatorType") or "javascript"
    expression = inputs.get("expression")
    if not isinstance(expression, str):
        raise DeadLetter(f"INLINE: expression must be text, not {expression!r}")
    if evaluator == "value-param":
        return {"result": inputs.get(expression)}
    return {"result": run_javascript(expression, inputs)}


def lambda_body(script: str) -> Body:
    """A LAMBDA's body: ``scriptExpression`` is a field of the task, not of its input."""
    def run(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        return {"result": run_javascript(script, inputs, function_body=True)}
    return run


def json_jq_transform(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
    query = inputs.get("queryExpression")
    if not isinstance(query, str) or not query:
        raise DeadLetter("JSON_JQ_TRANSFORM: queryExpression is missing")
    values = run_jq(query, inputs)
    return {"result": values[0] if values else None, "resultList": values}


def http(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
    try:
        import httpx
    except ImportError as exc:
        raise DeadLetter(f"HTTP tasks need the optional extra: pip install "
                         f"'{HTTP_EXTRA}'") from exc
    request = inputs.get("http_request") if isinstance(inputs.get("http_request"), Mapping) \
        else inputs
    uri, method = request.get("uri"), request.get("method")
    if not uri or not method:
        raise DeadLetter("HTTP: http_request needs both uri and method")
    headers = {str(k): str(v) for k, v in (request.get("headers") or {}).items()
               if v is not None}
    headers.setdefault("Content-Type", str(request.get("contentType") or "application/json"))
    accept = request.get("accept") or "application/json"
    headers.setdefault("Accept", ", ".join(accept) if isinstance(accept, list) else accept)
    timeout = httpx.Timeout(float(request.get("readTimeOut") or 3000) / 1000,
                            connect=float(request.get("connectionTimeOut") or 3000) / 1000)
    body = request.get("body")
    content = None if body is None else orjson.dumps(body)
    answer = httpx.request(str(method).upper(), str(uri), headers=headers, content=content,
                           timeout=timeout)
    if not answer.is_success:
        raise HttpStatusError(f"HTTP {method} {uri}: {answer.status_code} "
                              f"{answer.reason_phrase}")
    return {"response": {"statusCode": answer.status_code,
                         "reasonPhrase": answer.reason_phrase,
                         "headers": {k: answer.headers.get_list(k) for k in answer.headers},
                         "body": _body(answer.text)}}


def _body(text: str) -> Any:
    """JSON bodies parsed, numbers as floats, anything else as text (as Conductor)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if isinstance(value, dict | list):
        return value
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else text
