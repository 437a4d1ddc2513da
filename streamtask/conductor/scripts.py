"""Script evaluators for SWITCH (javascript), INLINE, LAMBDA and JSON_JQ_TRANSFORM.

JavaScript runs in V8 through ``mini-racer`` and jq through the ``jq`` package; both are
optional extras (``pip install 'streamtask[js]'``, ``'streamtask[jq]'``). A definition that
needs a missing one is rejected when it is loaded, with the extra to install named, so a
worker never starts without what its tasks need.

Each script sees the task's resolved input as ``$`` (JavaScript) or ``.`` (jq). A V8
context is kept per thread (creating one costs milliseconds); a script runs inside a
function so its variables do not leak into the next one.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

import orjson

from streamtask.errors import StreamtaskError

JS_EXTRA = "streamtask[js]"
JQ_EXTRA = "streamtask[jq]"
SCRIPT_TIMEOUT = 5.0
"""Seconds a JavaScript expression may run before it is interrupted."""

_local = threading.local()


class ScriptError(StreamtaskError):
    """A script failed to compile or run; the message says which and why."""


def missing_extra(kind: str) -> str | None:
    """The extra to install for ``kind`` (``"js"`` or ``"jq"``), or None if it is present."""
    module, extra = ("py_mini_racer", JS_EXTRA) if kind == "js" else ("jq", JQ_EXTRA)
    return None if importlib.util.find_spec(module) is not None else extra


def run_javascript(expression: str, value: Any, *, function_body: bool = False) -> Any:
    """The value of ``expression`` with ``$`` bound to ``value`` (JSON in, JSON out).

    ``function_body=True`` runs it as a function's body (LAMBDA's ``scriptExpression``,
    which needs ``return``); otherwise the value of its last statement is the result
    (INLINE, SWITCH and DO_WHILE's ``loopCondition``).
    """
    context = getattr(_local, "racer", None)
    if context is None:
        try:
            from py_mini_racer import MiniRacer
        except ImportError as exc:
            raise ScriptError(f"JavaScript needs the optional extra: pip install "
                              f"'{JS_EXTRA}'") from exc
        context = _local.racer = MiniRacer()
    argument = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    body = expression if function_body else f"return eval({orjson.dumps(expression).decode()});"
    code = f"JSON.stringify((function($) {{ {body} \n}})({argument}))"
    try:
        text = context.eval(code, timeout_sec=SCRIPT_TIMEOUT)
    except Exception as exc:  # mini-racer's JSEvalException, JSTimeoutException, ...
        raise ScriptError(f"JavaScript {expression[:80]!r} failed: {exc}") from exc
    return orjson.loads(text) if isinstance(text, str) else None


def run_jq(query: str, value: Any) -> list[Any]:
    """Every value ``query`` produces from ``value``."""
    try:
        import jq  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ScriptError(f"JSON_JQ_TRANSFORM needs the optional extra: pip install "
                          f"'{JQ_EXTRA}'") from exc
    try:
        return list(jq.compile(query).input_value(value).all())
    except ValueError as exc:
        raise ScriptError(f"jq {query[:80]!r} failed: {exc}") from exc
