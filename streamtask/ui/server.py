"""The console's pages and actions (an ASGI app): pipeline, dead letters, runs, designer.

Pages are rendered on the server from what the shared loops hold: the
:class:`~streamtask.ui.letters.LetterIndex` and the :class:`~streamtask.ui.live.StatusFeed`
(no broker read per page load), except the Runs pages, which read the execution trail when
asked. Actions that change something (replay, save) are POSTs of JSON, logged with the
client's address, and refused with 403 under ``read_only``. Kafka work that blocks (a
replay, a trail read) runs on other threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from streamtask.errors import ConfigurationError, StreamtaskError
from streamtask.model.app import App, Stage
from streamtask.ops import deadletters as dlq
from streamtask.ops import trail
from streamtask.ops.graph import ladder, svg
from streamtask.ui import designer
from streamtask.ui.access import TokenGate
from streamtask.ui.letters import KEEP, LetterIndex
from streamtask.ui.live import StatusFeed
from streamtask.ui.replays import ReplayJobs
from streamtask.ui.runs import run_lines, timeline
from streamtask.ui.views import letter_view, row_view

log = logging.getLogger("streamtask.ui")
HERE = Path(__file__).parent
PAGE_SIZE = 50
PUSH_SECONDS = 1.0


@dataclass(frozen=True)
class ConsoleSettings:
    """How the console runs; see ``streamtask ui --help``."""

    read_only: bool = False
    token: str | None = None
    designer_dir: Path = field(default_factory=Path.cwd)
    """Where the designer saves definitions (names are relative to it)."""
    workflow: Path | None = None
    """The definition the designer opens with (else a small starter)."""
    keep: int = KEEP
    status_interval: float = 5.0
    """Seconds between two looks of the shared status loop (the verdicts' window)."""


class Console:
    """What the routes share: the app, the dead-letter index, the replays, the templates."""

    def __init__(self, app: App, settings: ConsoleSettings,
                 index: LetterIndex | None = None) -> None:
        self.app = app
        self.settings = settings
        self.index = index or LetterIndex(app, keep=settings.keep)
        self.replays = ReplayJobs(app)
        self.feed = StatusFeed(app, settings.status_interval)
        self.templates = Jinja2Templates(directory=HERE / "templates")

    def page(self, request: Request, name: str, code: int = 200, **context: Any) -> Response:
        context.update(app=self.app, read_only=self.settings.read_only,
                       problem=self.index.problem or self.feed.problem, ready=self.index.ready)
        return self.templates.TemplateResponse(request, name, context, status_code=code)

    # -- pipeline ------------------------------------------------------------------------

    async def pipeline(self, request: Request) -> Response:
        stages = [{"stage": stage, "ladder": ladder(stage)} for stage in self.app.stages.values()]
        return self.page(request, "pipeline.html", svg=svg(self.app), stages=stages,
                         counts=self.index.counts(), status=self.feed.as_json(),
                         interval=self.settings.status_interval)

    async def stage(self, request: Request) -> Response:
        stage = self._stage(request.path_params["stage"])
        recent = self.index.find(stage.name, None, 1, 10)
        return self.page(request, "stage.html", stage=stage, ladder=ladder(stage),
                         counts=self.index.counts()[stage.name],
                         status=self.feed.statuses.get(stage.name),
                         rows=[row_view(r) for r in recent.letters])

    async def events(self, request: Request) -> Response:
        """Server-sent events: the dead-letter counts per stage and the stages' verdicts,
        each whenever it changes (read from the shared loops, never from the broker)."""
        async def stream() -> AsyncIterator[bytes]:
            seen = (-1, -1)
            while not await request.is_disconnected():
                now = (self.index.version, self.feed.version)
                if now[0] != seen[0]:
                    counts = {name: {"dead": dead, "held": held}
                              for name, (dead, held) in self.index.counts().items()}
                    yield b"event: counts\ndata: " + orjson.dumps(counts) + b"\n\n"
                if now[1] != seen[1] and self.feed.statuses:
                    yield b"event: status\ndata: " + orjson.dumps(self.feed.as_json()) + \
                        b"\n\n"
                seen = now
                await asyncio.sleep(PUSH_SECONDS)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    # -- dead letters --------------------------------------------------------------------

    async def letters_overview(self, request: Request) -> Response:
        return self.page(request, "letters_overview.html", counts=self.index.counts())

    async def letters(self, request: Request) -> Response:
        stage = self._stage(request.path_params["stage"])
        query = {k: request.query_params.get(k, "").strip()
                 for k in ("error_type", "since", "key")}
        try:
            chosen = dlq.Filter.build(query["error_type"] or None, query["since"] or None,
                                      time.time_ns() // 1_000_000, key=query["key"] or None)
            error = None
        except ConfigurationError as exc:
            chosen, error = dlq.Filter(), str(exc)
        number = _int(request.query_params.get("page"), 1)
        found = self.index.find(stage.name, None if chosen == dlq.Filter() else chosen.matches,
                                number, PAGE_SIZE)
        return self.page(request, "letters.html", code=400 if error else 200, stage=stage,
                         query=query, error=error, found=found,
                         rows=[row_view(r) for r in found.letters],
                         error_types=self.index.error_types(stage.name).most_common(),
                         counts=self.index.counts()[stage.name])

    async def letter(self, request: Request) -> Response:
        stage = self._stage(request.path_params["stage"])
        record = self.index.get(stage.name, request.path_params["partition"],
                                request.path_params["offset"])
        if record is None:
            return self.page(request, "missing.html", code=404,
                             what=f"dead letter {stage.dlq_topic}"
                                  f"[{request.path_params['partition']}]"
                                  f"@{request.path_params['offset']}")
        letter = dlq.decode(stage, self.app.codec, record)
        return self.page(request, "letter.html", stage=stage, letter=letter_view(letter))

    async def start_replay(self, request: Request) -> Response:
        body = await self._write_body(request, "replay")
        if isinstance(body, Response):
            return body
        try:
            stage = str(body.get("stage", ""))
            options = _replay_options(body)
            job = self.replays.start(stage, options, _asked(body))
        except (ConfigurationError, ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        log.info("replay %d of stage %s started by %s: %s (consumer group %s)", job.id, stage,
                 _client(request), job.asked, job.group)
        return JSONResponse(job.as_json(), status_code=202)

    async def replay_status(self, request: Request) -> Response:
        job = self.replays.get(request.path_params["job"])
        if job is None:
            return JSONResponse({"error": "no such replay"}, status_code=404)
        return JSONResponse(job.as_json())

    # -- runs ----------------------------------------------------------------------------

    async def runs(self, request: Request) -> Response:
        """Runs of the execution trail since a time (read from Kafka on a worker thread)."""
        query = {k: request.query_params.get(k, "").strip()
                 for k in ("run", "stage", "outcome", "since")}
        if query["run"]:
            return RedirectResponse(f"/runs/{quote(query['run'], safe='')}", status_code=303)
        query["since"] = query["since"] or "1h"
        context: dict[str, Any] = {"query": query, "outcomes": trail.OUTCOMES,
                                   "topic": trail.topic_of(self.app), "lines": None,
                                   "matched": 0, "error": None}
        try:
            since_ms = dlq.parse_since(query["since"], time.time_ns() // 1_000_000)
            records = await asyncio.to_thread(trail.read_since, self.app, since_ms)
        except ConfigurationError as exc:
            return self.page(request, "runs.html", code=400, **{**context, "error": str(exc)})
        except StreamtaskError as exc:
            return self.page(request, "runs.html", code=503, **{**context, "error": str(exc)})
        lines, matched = run_lines(records, query["stage"] or None, query["outcome"] or None)
        return self.page(request, "runs.html", **{**context, "lines": [x.view for x in lines],
                                                  "matched": matched})

    async def run(self, request: Request) -> Response:
        """One run's tree and timeline."""
        run_id = request.path_params["run_id"]
        try:
            events = await asyncio.to_thread(trail.read_run, self.app, run_id)
        except StreamtaskError as exc:
            return self.page(request, "run.html", code=503, run_id=run_id, error=str(exc),
                             line=None)
        return self.page(request, "run.html", run_id=run_id, error=None,
                         line=timeline(trail.tree(events)))

    # -- designer ------------------------------------------------------------------------

    async def designer_page(self, request: Request) -> Response:
        path = self.settings.workflow
        text = path.read_text(encoding="utf-8") if path is not None else \
            orjson.dumps(designer.STARTER, option=orjson.OPT_INDENT_2).decode()
        return self.page(request, "designer.html", text=text, design=designer.design(text),
                         file=path.name if path is not None else "my_workflow.json",
                         directory=self.settings.designer_dir)

    async def check_design(self, request: Request) -> Response:
        """The check of the posted definition; reads and writes nothing, so always allowed."""
        text = (await request.body()).decode("utf-8", errors="replace")
        return JSONResponse(designer.design(text).as_json())

    async def save_design(self, request: Request) -> Response:
        body = await self._write_body(request, "save")
        if isinstance(body, Response):
            return body
        name, text = str(body.get("name", "")), str(body.get("definition", ""))
        try:
            path = designer.save(self.settings.designer_dir, name, text,
                                 overwrite=bool(body.get("overwrite")))
        except FileExistsError:
            return JSONResponse({"error": f"{name} exists", "exists": True}, status_code=409)
        except ConfigurationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        log.info("designer: %s saved %s", _client(request), path)
        return JSONResponse({"saved": str(path), "ok": designer.design(text).ok})

    # -- helpers -------------------------------------------------------------------------

    def _stage(self, name: str) -> Stage:
        stage = self.app.stages.get(name)
        if stage is None:
            raise _NotFound(f"stage {name!r}")
        return stage

    async def _write_body(self, request: Request, action: str) -> dict[str, Any] | Response:
        """The JSON body of a write, or the response refusing it (read-only, not JSON)."""
        if self.settings.read_only:
            log.info("refused %s from %s: the console is read-only", action, _client(request))
            return JSONResponse({"error": f"this console is read-only (--read-only): {action} "
                                          "is turned off"}, status_code=403)
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return JSONResponse({"error": "send JSON (Content-Type: application/json)"},
                                status_code=415)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return JSONResponse({"error": f"not JSON: {exc}"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "send a JSON object"}, status_code=400)
        return body


class _NotFound(Exception):
    """A page for a stage or record that does not exist (rendered as a 404 page)."""


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown"


def _replay_options(body: dict[str, Any]) -> dlq.ReplayOptions:
    """ReplayOptions from a replay request: positions picked, or the page's filters."""
    positions = body.get("positions")
    picked = frozenset((int(p), int(o)) for p, o in positions) if positions else None
    rate = body.get("rate")
    return dlq.ReplayOptions(
        dlq.Filter.build(body.get("error_type") or None, body.get("since") or None,
                         time.time_ns() // 1_000_000, key=body.get("key") or None,
                         positions=picked),
        rate=float(rate) if rate not in (None, "") else None,
        max_replays=int(body.get("max_replays", 3)))


def _asked(body: dict[str, Any]) -> str:
    """What the replay was asked to take, in words (for the log and the page)."""
    if body.get("positions"):
        return f"{len(body['positions'])} picked dead letter(s)"
    parts = [f"{k} {body[k]}" for k in ("error_type", "since", "key") if body.get(k)]
    return "dead letters with " + ", ".join(parts) if parts else "every dead letter"


def create_app(app: App, settings: ConsoleSettings | None = None, *,
               index: LetterIndex | None = None) -> Starlette:
    """The console for ``app`` as an ASGI app; its dead-letter reader runs while it serves."""
    console = Console(app, settings or ConsoleSettings(), index)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        console.index.start()
        console.feed.start()
        try:
            yield
        finally:
            await asyncio.gather(asyncio.to_thread(console.index.stop),
                                 asyncio.to_thread(console.feed.stop))

    async def not_found(request: Request, exc: Exception) -> Response:
        return console.page(request, "missing.html", code=404, what=str(exc))

    routes = [
        Route("/", lambda request: RedirectResponse("/pipeline")),
        Route("/pipeline", console.pipeline),
        Route("/pipeline/events", console.events),
        Route("/stages/{stage}", console.stage),
        Route("/letters", console.letters_overview),
        Route("/letters/{stage}", console.letters),
        Route("/letters/{stage}/{partition:int}/{offset:int}", console.letter),
        Route("/api/replays", console.start_replay, methods=["POST"]),
        Route("/api/replays/{job:int}", console.replay_status),
        Route("/runs", console.runs),
        Route("/runs/{run_id}", console.run),
        Route("/designer", console.designer_page),
        Route("/api/designer/check", console.check_design, methods=["POST"]),
        Route("/api/designer/save", console.save_design, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    asgi = Starlette(routes=routes, lifespan=lifespan,
                     middleware=[Middleware(TokenGate, token=console.settings.token)],
                     exception_handlers={_NotFound: not_found})
    asgi.state.console = console
    return asgi
