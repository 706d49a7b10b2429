"""Tornado routes: ``/ws`` (the protocol), ``/health``, ``/admin``, and the optional widget page.

The handlers run on whatever asyncio loop is current when the server starts:
the kernel's own loop inside a notebook, the CLI's loop otherwise.

Every route first checks the ``Host`` header, so a DNS-rebinding page (a
hostile name that resolves to 127.0.0.1) cannot reach the server through the
browser. ``/ws`` also checks ``Origin``, because browsers let any page open a
WebSocket to any host, and then the verifier's token.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import tornado.web
import tornado.websocket
from tornado.log import access_log

from smooth_nb.server import protocol
from smooth_nb.server.auth import Principal, Verifier
from smooth_nb.server.dispatch import Connection, ServerState

logger = logging.getLogger(__name__)

#: Host names that always mean this machine.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

#: Bytes of frames a client may leave unread before its socket is closed.
DEFAULT_MAX_PENDING_BYTES = 8 * 1024 * 1024


class HttpSettings:
    """The checks and settings of the HTTP routes, beyond the protocol state."""

    def __init__(
        self,
        *,
        verifier: Verifier,
        bind_host: str,
        allowed_origins: set[str],
        allowed_hosts: frozenset[str] = frozenset(),
        widget_token: str | None = None,
        serve_widget: bool = False,
        notice: str | None = None,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        self.verifier = verifier
        self.bind_host = bind_host
        #: Browser origins allowed besides the server's own; the notebook adds its front-end's.
        self.allowed_origins = allowed_origins
        self.allowed_hosts = allowed_hosts
        self.widget_token = widget_token
        self.serve_widget = serve_widget
        self.notice = notice
        self.max_pending_bytes = max_pending_bytes

    def __repr__(self) -> str:
        # The widget token is a secret: it never reaches a log line or a traceback.
        return f"HttpSettings(auth={self.verifier.mode}, serve_widget={self.serve_widget})"

    def host_allowed(self, host_header: str) -> bool:
        hostname = urlsplit(f"//{host_header}").hostname or ""
        hostname = hostname.lower()
        if "*" in self.allowed_hosts:
            return True
        return hostname in LOOPBACK_NAMES or hostname == self.bind_host.lower() or hostname in self.allowed_hosts

    def origin_allowed(self, origin: str, host_header: str) -> bool:
        origin = origin.rstrip("/")
        if origin in self.allowed_origins:
            return True
        parsed = urlsplit(origin)
        return parsed.scheme in ("http", "https") and parsed.netloc.lower() == host_header.lower()


def error_body(code: str, message: str) -> dict[str, Any]:
    """Build the protocol's error envelope, used by HTTP routes too."""
    return protocol.error(None, code, message)


def request_token(handler: tornado.web.RequestHandler) -> str | None:
    header = handler.request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return handler.get_query_argument("token", None)


class GuardedHandler(tornado.web.RequestHandler):
    """Base of the HTTP routes: rejects requests whose Host is not this server's."""

    def initialize(self, state: ServerState, settings: HttpSettings) -> None:
        self.state = state
        self.http = settings

    def prepare(self) -> None:
        if not self.http.host_allowed(self.request.host):
            logger.warning("rejected %s %s: Host %r is not allowed", self.request.method, self.request.path, self.request.host)
            self.send_json(403, error_body("FORBIDDEN_HOST", f"Host {self.request.host[:100]!r} is not allowed"))

    def send_json(self, status: int, body: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body, ensure_ascii=False))

    def authenticate(self) -> Principal | None:
        """Return the principal, or send 401 and return None."""
        principal = self.http.verifier.verify(request_token(self))
        if principal is None:
            logger.warning("rejected %s %s from %s: missing or wrong token", self.request.method, self.request.path, self.request.remote_ip)
            self.send_json(401, error_body("UNAUTHORIZED", "missing or wrong token: send Authorization: Bearer <token>"))
        return principal


class ProtocolSocket(tornado.websocket.WebSocketHandler):
    """The ``/ws`` endpoint: one :class:`Connection` per socket."""

    def initialize(self, state: ServerState, settings: HttpSettings) -> None:
        self.state = state
        self.http = settings
        self.connection: Connection | None = None
        self._pending_bytes = 0

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if not self.http.host_allowed(self.request.host):
            logger.warning("rejected /ws: Host %r is not allowed", self.request.host)
            self.set_status(403)
            self.finish(error_body("FORBIDDEN_HOST", f"Host {self.request.host[:100]!r} is not allowed"))
            return
        if self.http.verifier.verify(request_token(self)) is None:
            logger.warning("rejected /ws connection from %s: missing or wrong token", self.request.remote_ip)
            self.set_status(401)
            self.finish(error_body("UNAUTHORIZED", "missing or wrong token: connect to /ws?token=<token>"))
            return
        await super().get(*args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        """Accept the server's own origin and the allowed origins; reject every other page.

        Tornado calls this only for requests that carry an Origin header, so
        clients that are not browsers are not affected.
        """
        if self.http.origin_allowed(origin, self.request.host):
            return True
        logger.warning("rejected /ws connection from origin %s", origin[:200])
        return False

    def open(self, *args: Any, **kwargs: Any) -> None:
        # Streamed tokens are small frames; without TCP_NODELAY they can wait for Nagle's timer.
        self.set_nodelay(True)
        self.connection = Connection(self.state, self._write, self.close, peer=self.request.remote_ip or "")

    def _write(self, text: str) -> None:
        if self.ws_connection is None or self.ws_connection.is_closing():
            return
        size = len(text)
        self._pending_bytes += size
        if self._pending_bytes > self.http.max_pending_bytes:
            logger.warning("closing /ws from %s: over %d bytes left unread", self.request.remote_ip, self.http.max_pending_bytes)
            self.close(1008, "client is not reading its frames")
            return
        future = self.write_message(text)
        future.add_done_callback(lambda _: self._written(size))

    def _written(self, size: int) -> None:
        self._pending_bytes -= size

    def on_message(self, message: str | bytes) -> None:
        if self.connection is not None:
            self.connection.handle_text(message)

    def on_close(self) -> None:
        if self.connection is not None:
            self.connection.closed()


class HealthHandler(GuardedHandler):
    def get(self) -> None:
        self.send_json(
            200,
            {
                "status": "ok",
                "flavor": "local",
                "model": self.state.router.settings.mode,
                "sessions": len(self.state.store.sessions),
                "connections": len(self.state.connections),
            },
        )


def widget_script() -> str:
    """Return the chat widget's JavaScript source, shared by the page and the notebook widget."""
    return resources.files("smooth_nb").joinpath("static/chat-widget.iife.js").read_text(encoding="utf-8")


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>smooth-nb chat</title>
<style>body {{ margin: 0; padding: 24px; font-family: system-ui, sans-serif; background: #f6f7f9; }}</style>
</head>
<body>
<div id="app"></div>
<script src="/chat-widget.iife.js"></script>
<script>
  (function () {{
    var config = {config};
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    config.wsUrl = scheme + location.host + "/ws";
    var fromQuery = new URLSearchParams(location.search).get("token");
    if (fromQuery) config.token = fromQuery;
    SmoothNbChat.mount(document.getElementById("app"), config);
  }})();
</script>
</body>
</html>
"""


class WidgetPageHandler(GuardedHandler):
    def get(self) -> None:
        config = {"token": self.http.widget_token, "notice": self.http.notice}
        # json.dumps output is safe inside a script element once "</" cannot close it.
        embedded = json.dumps(config).replace("</", "<\\/")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        # The page embeds the token: it must not be framed or read by another origin.
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Content-Security-Policy", "frame-ancestors 'none'")
        self.finish(_PAGE.format(config=embedded))


class WidgetScriptHandler(GuardedHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/javascript; charset=utf-8")
        self.finish(widget_script())


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Log one finished request like tornado does, but with the path only.

    Tornado's own access log prints the query string, and ``/ws?token=...``
    would put the token in the log.
    """
    status = handler.get_status()
    if status < 400:
        log = access_log.info
    elif status < 500:
        log = access_log.warning
    else:
        log = access_log.error
    request = handler.request
    log("%d %s %s (%s) %.2fms", status, request.method, request.path, request.remote_ip, 1000.0 * request.request_time())


def make_app(state: ServerState, settings: HttpSettings, *, max_frame_bytes: int) -> tornado.web.Application:
    from smooth_nb.server.admin import admin_routes

    handler_args = {"state": state, "settings": settings}
    routes: list[Any] = [
        (r"/ws", ProtocolSocket, handler_args),
        (r"/health", HealthHandler, handler_args),
        *admin_routes(handler_args),
    ]
    if settings.serve_widget:
        routes += [
            (r"/", WidgetPageHandler, handler_args),
            (r"/chat-widget\.iife\.js", WidgetScriptHandler, handler_args),
        ]
    # Tornado closes a socket whose frame is over this size with close code 1009.
    return tornado.web.Application(routes, websocket_max_message_size=max_frame_bytes, log_function=log_request)
