"""Who may use the console: loopback by default, an access token for anything else.

With a token, every request must carry it: as ``Authorization: Bearer <token>``, or once
as ``?token=<token>`` in a link, which sets an HttpOnly, SameSite=Strict cookie and
redirects to the same page without it (so the token does not stay in the address bar or
the history). Requests that change something must also be JSON (``Content-Type:
application/json``), which a form on another site cannot send without the browser asking
first; that and the SameSite cookie keep other sites from replaying or saving for a user.
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from streamtask.errors import ConfigurationError

COOKIE = "streamtask_ui_token"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without an access token."""
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"--host {host} lets other machines reach the console: give an access token "
            "with --token (or STREAMTASK_UI_TOKEN), or bind 127.0.0.1")
    if token is not None and len(token) < 16:
        raise ConfigurationError("--token must be at least 16 characters; e.g. "
                                 "`python -c 'import secrets; print(secrets.token_urlsafe())'`")


class TokenGate:
    """ASGI middleware: lets a request through only with the console's token (if it has
    one); see the module docstring."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = self._answer(request)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _answer(self, request: Request) -> Response | None:
        """None to let the request through, else the response that refuses or redirects."""
        assert self.token is not None
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if self._valid(bearer) or self._valid(request.cookies.get(COOKIE, "")):
            return None
        if self._valid(request.query_params.get("token", "")):
            params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            clean = URL(str(request.url)).replace_query_params(**dict(params))
            redirect = RedirectResponse(clean.path + (f"?{clean.query}" if clean.query else ""),
                                        status_code=303)
            redirect.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return redirect
        return PlainTextResponse("this console needs its access token: open it with "
                                 "?token=<token> or send 'Authorization: Bearer <token>'",
                                 status_code=401)

    def _valid(self, given: str) -> bool:
        assert self.token is not None
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())
