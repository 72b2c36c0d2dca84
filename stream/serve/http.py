"""The plain HTTP side of the server's port, and the token, checked the same way for HTTP and WebSocket.

Answered from `websockets`' handshake hook (`process_request`): the page and its scripts (public: static files,
the same for everyone, holding no data), `/models` and `/metrics` (with `--token-file`, only with the token: they
tell what is served and how busy it is). Only GET and HEAD are answered (405 otherwise); a request with more than
one `Upgrade` header is refused (400); anything this code did not foresee is a 500 and ONE log line, never a
traceback (websockets would log one and answer 500 itself).

The token is compared as bytes, in constant time: what the client sent (a header's bytes as they came, ISO-8859-1
being how `websockets` decoded them; a query parameter percent-decoded to its bytes) against the token's UTF-8
bytes. A non-ASCII token, on either side, is then only a token that matches or not: `hmac.compare_digest` refuses
non-ASCII `str` with a TypeError, which was a 1011 for every client.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from models.errors import one_line

from .metrics import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

TEXT = "text/plain; charset=utf-8"
STATIC = {  # path -> (file in stream/serve/static, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/pcm-worklet.js": ("pcm-worklet.js", "text/javascript; charset=utf-8"),
    "/pen.js": ("pen.js", "text/javascript; charset=utf-8"),
}
PROTECTED = ("/metrics", "/models")  # need the token, when the server has one


def token_ok(request: Request, token: str | None) -> bool:
    """Whether `request` carries `token` (`Authorization: Bearer T` or `?token=T`); True when there is none."""
    if token is None:
        return True
    return hmac.compare_digest(_sent_token(request), token.encode("utf-8", "surrogateescape"))


def _sent_token(request: Request) -> bytes:
    auth = request.headers.get_all("Authorization")
    if len(auth) == 1 and auth[0].lower().startswith("bearer "):
        return auth[0][7:].strip().encode("iso-8859-1", "replace")  # the header's own bytes
    # latin-1 maps each percent-decoded byte to one character: encoding back gives the bytes sent
    sent = parse_qs(urlsplit(request.path).query, encoding="iso-8859-1").get("token", [""])[0]
    return sent.encode("iso-8859-1")


class Site:
    """What the port answers in plain HTTP: `models` and `metrics` give the bodies of /models and /metrics."""

    def __init__(self, token: str | None, models: Callable[[], bytes], metrics: Callable[[], bytes]):
        self.token, self.models, self.metrics = token, models, metrics
        self.static = {path: _static(name) for path, (name, _) in STATIC.items()}

    def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            return self._answer(connection, request)
        except Exception as e:  # the last resort: one line, not websockets' traceback
            log.warning("HTTP %s %s: unexpected %s: %s", request.method, request.path[:80], type(e).__name__, one_line(e))
            return response(connection, 500, b"internal error\n", TEXT)

    def _answer(self, connection: ServerConnection, request: Request) -> Response | None:
        upgrade = request.headers.get_all("Upgrade")
        if len(upgrade) > 1:
            return response(connection, 400, b"more than one Upgrade header\n", TEXT)
        if upgrade and upgrade[0].lower() == "websocket":
            return None  # the WebSocket handshake (Vosk clients: any path); websockets checks the rest
        if request.method not in ("GET", "HEAD"):
            return response(connection, 405, b"only GET and HEAD\n", TEXT, allow=True)
        path = urlsplit(request.path).path
        if path in PROTECTED and not token_ok(request, self.token):
            return response(connection, 401, b"token required (Authorization: Bearer T, or ?token=T)\n", TEXT)
        status = 200
        if path == "/metrics":
            body, kind = self.metrics(), CONTENT_TYPE_LATEST
        elif path == "/models":
            body, kind = self.models(), "application/json"
        elif path in self.static:
            body, kind = self.static[path], STATIC[path][1]
        else:
            status, body, kind = 404, b"not found\n", TEXT
        return response(connection, status, body, kind, head=request.method == "HEAD")


def _static(name: str) -> bytes:
    return resources.files("stream.serve").joinpath("static", name).read_bytes()


def response(connection: ServerConnection, status: int, body: bytes, content_type: str, head: bool = False,
             allow: bool = False) -> Response:
    """A complete response; `head`: its headers only (Content-Length still the body's)."""
    r = connection.respond(status, "")
    headers = Headers([(k, v) for k, v in r.headers.raw_items() if k.lower() not in ("content-type", "content-length")])
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    if allow:
        headers["Allow"] = "GET, HEAD"
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return Response(r.status_code, r.reason_phrase, headers, b"" if head else body)
