"""Tornado routes: ``/ws`` (the protocol), ``/health``, and the optional widget page.

The handlers run on whatever asyncio loop is current when the server starts:
the kernel's own loop inside a notebook, the CLI's loop otherwise.
"""

from __future__ import annotations

import hmac
import json
import logging
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import tornado.web
import tornado.websocket

from smooth_nb.server.dispatch import Connection, ServerState

logger = logging.getLogger(__name__)

#: Host names that always mean this machine.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


class HttpSettings:
    """What the routes need beyond the protocol state."""

    def __init__(
        self,
        *,
        token: str | None,
        allowed_origins: frozenset[str],
        widget_token: str | None,
        serve_widget: bool,
        notice: str | None,
    ) -> None:
        self.token = token
        self.allowed_origins = allowed_origins
        self.widget_token = widget_token
        self.serve_widget = serve_widget
        self.notice = notice

    def __repr__(self) -> str:
        # Tokens never reach a log line or a traceback.
        return f"HttpSettings(auth={'local-token' if self.token else 'none'}, serve_widget={self.serve_widget})"


def _token_matches(expected: str | None, given: str | None) -> bool:
    if expected is None:
        return True
    if given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def _bearer(request: Any) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


class ProtocolSocket(tornado.websocket.WebSocketHandler):
    """The ``/ws`` endpoint: one :class:`Connection` per socket."""

    def initialize(self, state: ServerState, settings: HttpSettings) -> None:
        self.state = state
        self.http = settings
        self.connection: Connection | None = None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        given = self.get_query_argument("token", None) or _bearer(self.request)
        if not _token_matches(self.http.token, given):
            logger.warning("rejected /ws connection from %s: missing or wrong token", self.request.remote_ip)
            self.set_status(401)
            self.finish({"error": {"code": "UNAUTHORIZED", "message": "missing or wrong token; pass ?token=..."}})
            return
        await super().get(*args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        """Accept the server's own origin, loopback pages and configured origins.

        Browsers let any page open a WebSocket to any host, so without this check
        a page from anywhere could drive a server on 127.0.0.1. Clients that are
        not browsers send no Origin and are accepted by tornado before this runs.
        """
        if origin in self.http.allowed_origins:
            return True
        parsed = urlsplit(origin)
        host = (parsed.hostname or "").lower()
        if host in LOOPBACK_NAMES or parsed.netloc == self.request.host:
            return True
        logger.warning("rejected /ws connection from origin %s", origin)
        return False

    def open(self, *args: Any, **kwargs: Any) -> None:
        # Streamed tokens are small frames; without TCP_NODELAY they can wait for Nagle's timer.
        self.set_nodelay(True)
        self.connection = Connection(self.state, self._write, self.close, peer=self.request.remote_ip or "")

    def _write(self, text: str) -> None:
        if self.ws_connection is None or self.ws_connection.is_closing():
            return
        self.write_message(text)

    def on_message(self, message: str | bytes) -> None:
        if self.connection is not None:
            self.connection.handle_text(message)

    def on_close(self) -> None:
        if self.connection is not None:
            self.connection.closed()


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, state: ServerState, settings: HttpSettings) -> None:
        self.state = state

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.finish(
            {
                "status": "ok",
                "flavor": "local",
                "model": self.state.router.settings.mode,
                "sessions": len(self.state.store.sessions),
                "connections": len(self.state.connections),
            }
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


class WidgetPageHandler(tornado.web.RequestHandler):
    def initialize(self, state: ServerState, settings: HttpSettings) -> None:
        self.http = settings

    def get(self) -> None:
        config = {"token": self.http.widget_token, "notice": self.http.notice}
        # json.dumps output is safe inside a script element once "</" cannot close it.
        embedded = json.dumps(config).replace("</", "<\\/")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(_PAGE.format(config=embedded))


class WidgetScriptHandler(tornado.web.RequestHandler):
    def initialize(self, state: ServerState, settings: HttpSettings) -> None:
        pass

    def get(self) -> None:
        self.set_header("Content-Type", "application/javascript; charset=utf-8")
        self.finish(widget_script())


def make_app(state: ServerState, settings: HttpSettings, *, max_frame_bytes: int) -> tornado.web.Application:
    handler_args = {"state": state, "settings": settings}
    routes: list[Any] = [
        (r"/ws", ProtocolSocket, handler_args),
        (r"/health", HealthHandler, handler_args),
    ]
    if settings.serve_widget:
        routes += [
            (r"/", WidgetPageHandler, handler_args),
            (r"/chat-widget\.iife\.js", WidgetScriptHandler, handler_args),
        ]
    # Tornado closes a socket whose frame is over this size with close code 1009.
    return tornado.web.Application(routes, websocket_max_message_size=max_frame_bytes)
