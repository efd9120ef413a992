"""Who may use the dashboard, and how a stop request proves it comes from the page.

- **Host check** (bound to a loopback address): only ``Host: 127.0.0.1 | localhost | [::1]``
  is served, so a web page whose own domain resolves to 127.0.0.1 (DNS rebinding) cannot read it.
- **Token** (bound anywhere else): the command prints a random token once; ``POST /api/login``
  with it sets an HttpOnly, SameSite=Strict session cookie (an HMAC of the token, not the
  token); scripts may send ``Authorization: Bearer TOKEN`` instead. Every ``/api`` route
  except ``/api/config`` and ``/api/login`` answers 401 without one of them.
- **Stop requests** must be JSON, carry the per-process CSRF value the page read from
  ``/api/config`` in ``X-Rushhpc-Csrf``, and, when the browser sends ``Origin``, come from
  the dashboard's own origin. A page on another site can neither read that value nor send
  the header without a CORS preflight, which the dashboard never allows.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable

COOKIE = "rushhpc_dashboard"
CSRF_HEADER = "x-rushhpc-csrf"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
OPEN_PATHS = frozenset({"/api/config", "/api/login"})

SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
     b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def host_name(host_header: str) -> str:
    """``[::1]:8765`` -> ``::1``; ``localhost:8765`` -> ``localhost``."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1: h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class Access:
    """The dashboard's access rules (see the module docstring)."""

    def __init__(self, token: str | None, loopback: bool):
        self.token = token
        self.loopback = loopback
        self.csrf = secrets.token_urlsafe(24)
        self._session = (hmac.new(token.encode(), b"rushhpc-dashboard-session", hashlib.sha256).hexdigest()
                         if token else None)

    @property
    def auth_required(self) -> bool:
        return self.token is not None

    def session_cookie(self) -> str:
        assert self._session is not None
        return self._session

    def check_token(self, candidate: Any) -> bool:
        return (self.token is not None and isinstance(candidate, str)
                and hmac.compare_digest(candidate.encode(), self.token.encode()))

    def authenticated(self, headers: dict[str, str]) -> bool:
        if self.token is None:
            return True
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and self.check_token(auth[7:].strip()):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no session
            return False
        morsel = cookie.get(COOKIE)
        assert self._session is not None
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self._session.encode())

    def host_allowed(self, headers: dict[str, str]) -> bool:
        if not self.loopback:
            return True
        return host_name(headers.get("host", "")) in LOOPBACK_NAMES

    def control_refusal(self, headers: dict[str, str], scheme: str) -> str | None:
        """Why a state-changing request is refused, or None (see the module docstring)."""
        if not headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
            return "a stop request must be JSON (Content-Type: application/json)"
        sent = headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), self.csrf.encode()):
            return "missing or wrong X-Rushhpc-Csrf header: reload the page"
        origin = headers.get("origin")
        if origin is not None and origin != f"{scheme}://{headers.get('host', '')}":
            return f"cross-origin request from {origin!r} refused"
        return None


ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class Guard:
    """ASGI middleware: the host check and the token on every request, security headers on
    every response."""

    def __init__(self, app: ASGIApp, access: Access):
        self.app = app
        self.access = access

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if not self.access.host_allowed(headers):
            await _plain(send, 421, "unexpected Host header: open the dashboard at http://127.0.0.1:PORT/")
            return
        if path.startswith("/api/") and path not in OPEN_PATHS and not self.access.authenticated(headers):
            await _plain(send, 401, "the dashboard needs its access token: open the page and enter it")
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in names]
            await send(message)

        await self.app(scope, receive, with_headers)


async def _plain(send: Callable[[dict], Awaitable[None]], status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})
