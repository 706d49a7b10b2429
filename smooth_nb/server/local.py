"""The local flavor: an embeddable, zero-config smooth-operator server.

The local flavor is the server a developer runs next to their code: in a
notebook kernel, in a test, or in a terminal. It needs no external service.

Embed it on the running asyncio loop::

    server = await LocalServer.builder().addr("127.0.0.1:0").seed_kb(True).spawn()
    print(server.ws_url)        # ws://127.0.0.1:<real port>/ws
    await server.shutdown()

or run it in the foreground until killed::

    asyncio.run(serve_local("127.0.0.1:8787", seed_kb=True))

What the flavor pins, whatever configuration the caller passes:

- storage is in memory (sessions, conversations, messages, knowledge);
- the bind address is the one given to :meth:`LocalServerBuilder.addr`;
- auth is off unless a token is set, and a non-loopback address refuses to
  start without one unless ``allow_no_auth`` is set;
- the model comes from ``SMOOAI_GATEWAY_URL`` / ``SMOOAI_GATEWAY_KEY`` unless a
  mock reply or offline mode is chosen; with neither, ``send_message`` answers
  with a clean ``LLM_UNAVAILABLE`` error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from smooth_nb.engine import ModelRouter, ModelSettings, warm_up
from smooth_nb.server import protocol
from smooth_nb.server.dispatch import ServerState
from smooth_nb.server.auth import LocalTokenVerifier, NoAuth
from smooth_nb.server.http import DEFAULT_MAX_PENDING_BYTES, HttpSettings, make_app
from smooth_nb.server.store import MemoryStore
from smooth_nb.server.knowledge import KnowledgeBase, seed_demo
from smooth_nb.server.tools import Tool

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
#: Largest inbound WebSocket frame; a larger one closes its socket with code 1009.
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024


@dataclass
class ServerConfig:
    """Settings of a local server other than its bind address and storage."""

    seed_kb: bool = False
    #: Shared secret for ``/ws?token=`` and ``/admin``; None turns auth off.
    token: str | None = field(default=None, repr=False)
    #: Start on a non-loopback address without a token anyway.
    allow_no_auth: bool = False
    #: Browser origins besides the server's own allowed to open ``/ws`` and call ``/admin``.
    allowed_origins: tuple[str, ...] = ()
    #: Host names accepted in the Host header besides loopback names and the bind address.
    #: ``"*"`` accepts any name, which is only sensible behind a token on a public bind.
    allowed_hosts: tuple[str, ...] = ()
    #: Serve the chat page at ``/`` and its script at ``/chat-widget.iife.js``.
    serve_widget: bool = False
    #: Token the chat page connects with; defaults to ``token``.
    widget_token: str | None = field(default=None, repr=False)
    #: A banner the chat page shows (the notebook's offline-mode notice).
    notice: str | None = None
    #: How turns reach a model; None reads the environment.
    model: ModelSettings | None = None
    #: System prompt for every turn; None uses the engine wiring's default.
    instructions: str | None = None
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    #: Seconds of silence after which a connection gets a keepalive frame; 0 disables them.
    keepalive_seconds: float = 30.0
    #: Seconds a turn parked on write confirmation waits before the tool is refused.
    confirmation_timeout: float = 3600.0
    #: Offer the Rich Interaction raise tools to the model.
    interactions: bool = True
    #: How many of the newest stored messages a turn sends the model as history (the reference servers send 50).
    history_messages: int = 50
    #: Documents loaded into the knowledge base at start, as ``(source, content)`` pairs.
    documents: tuple[tuple[str, str], ...] = ()
    #: Maximum sessions kept; past it the least recently used idle session is evicted.
    max_sessions: int = 10_000
    #: Maximum messages in one conversation; past it send_message fails with CONVERSATION_FULL.
    max_messages: int = 2_000
    #: Bytes of frames a client may leave unread before its socket is closed.
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES


def parse_addr(addr: str | tuple[str, int]) -> tuple[str, int]:
    """Split ``"host:port"`` (``"[::1]:8787"`` for IPv6) or pass a ``(host, port)`` pair through."""
    if isinstance(addr, tuple):
        host, port = addr
    else:
        host, sep, port_text = addr.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ValueError(f"invalid address {addr!r}: expected HOST:PORT, for example 127.0.0.1:8787")
        port = int(port_text)
        host = host.strip("[]")
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"invalid port {port!r}: expected 0 (any free port) to 65535")
    return host or DEFAULT_HOST, port


def check_origin(origin: str) -> str:
    """Return ``origin`` without a trailing slash, or raise ValueError unless it is ``scheme://host[:port]``."""
    from urllib.parse import urlsplit

    parsed = urlsplit(origin.rstrip("/")) if isinstance(origin, str) else None
    if parsed is None or not parsed.scheme or not parsed.netloc or parsed.path or parsed.query or parsed.fragment:
        raise ValueError(f"invalid origin {origin!r}: expected scheme://host[:port] with no path, for example http://localhost:8888")
    return origin.rstrip("/")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LocalServerBuilder:
    """Collects the settings of a local server; :meth:`spawn` starts it."""

    def __init__(self) -> None:
        self._host, self._port = DEFAULT_HOST, DEFAULT_PORT
        self._config = ServerConfig()
        self._tools: list[Tool] = []

    def addr(self, addr: str | tuple[str, int]) -> LocalServerBuilder:
        self._host, self._port = parse_addr(addr)
        return self

    def seed_kb(self, enabled: bool = True) -> LocalServerBuilder:
        self._config.seed_kb = bool(enabled)
        return self

    def auth(self, token: str | None, *, allow_no_auth: bool = False) -> LocalServerBuilder:
        """Require ``token`` on ``/ws`` (None turns auth off)."""
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("token must be a non-empty string, or None to turn auth off")
        self._config.token = token
        self._config.allow_no_auth = allow_no_auth
        return self

    def tools(self, tools: Iterable[Tool]) -> LocalServerBuilder:
        self._tools = list(tools)
        return self

    def serve_widget(self, token: str | None = None) -> LocalServerBuilder:
        """Serve the chat page at ``/``; it connects with ``token`` (default: the auth token)."""
        self._config.serve_widget = True
        self._config.widget_token = token
        return self

    def model(self, settings: ModelSettings) -> LocalServerBuilder:
        self._config.model = settings
        return self

    @property
    def model_settings(self) -> ModelSettings:
        """The model the server will use: the one set with :meth:`model`, or the environment's."""
        return self._config.model if self._config.model is not None else ModelSettings.from_env()

    def config(self, config: ServerConfig | None = None, **changes: Any) -> LocalServerBuilder:
        """Replace the settings with ``config``, then apply keyword ``changes``.

        The bind address set by :meth:`addr` and the in-memory storage are not
        part of :class:`ServerConfig`, so no configuration can change them.
        """
        base = config if config is not None else self._config
        self._config = dataclasses.replace(base, **changes)
        return self

    async def spawn(self) -> LocalServerHandle:
        """Bind and start serving on the running loop; return the handle."""
        return self.start()

    def start(self) -> LocalServerHandle:
        """Bind now and serve on the running loop once it next runs.

        This is :meth:`spawn` for code that cannot ``await``, such as a notebook
        magic: the socket is bound before it returns, so the handle's port is real.
        """
        asyncio.get_running_loop()  # raises RuntimeError outside a running loop, with a clear message
        return LocalServerHandle._start(self._host, self._port, dataclasses.replace(self._config), list(self._tools))


class LocalServer:
    """Entry point of the local flavor: ``LocalServer.builder()``."""

    @staticmethod
    def builder() -> LocalServerBuilder:
        return LocalServerBuilder()


class LocalServerHandle:
    """A running local server.

    Dropping the last reference to the handle stops the server, and so does the
    end of the loop it runs on; :meth:`shutdown` stops it and waits for running
    turns to end.
    """

    def __init__(self) -> None:
        raise TypeError("use LocalServer.builder().spawn() to start a server")

    @classmethod
    def _start(cls, host: str, port: int, config: ServerConfig, tools: list[Tool]) -> LocalServerHandle:
        if not is_loopback(host) and config.token is None and not config.allow_no_auth:
            raise ValueError(
                f"refusing to bind {host}:{port} without a token: any machine that reaches this address "
                "could drive the server. Set a token (--token), bind 127.0.0.1, or allow it explicitly "
                "(--allow-no-auth, or allow_no_auth=True in Python)."
            )
        for origin in config.allowed_origins:
            check_origin(origin)
        if config.keepalive_seconds < 0 or 0 < config.keepalive_seconds < 0.1:
            raise ValueError(f"invalid keepalive interval {config.keepalive_seconds!r}: use 0 to disable, or at least 0.1 seconds")
        model = config.model if config.model is not None else ModelSettings.from_env()
        state = ServerState(
            router=ModelRouter(model),
            store=MemoryStore(max_sessions=config.max_sessions, max_messages=config.max_messages),
            instructions=config.instructions,
            interactions=config.interactions,
            confirmation_timeout=config.confirmation_timeout,
            keepalive_seconds=config.keepalive_seconds,
            history_messages=config.history_messages,
        )
        state.tools = {tool.name: tool for tool in tools}
        if config.seed_kb:
            seed_demo(state.knowledge)
        if config.documents:
            state.knowledge.add_many(list(config.documents), label="configured documents")

        settings = HttpSettings(
            verifier=LocalTokenVerifier(config.token) if config.token is not None else NoAuth(),
            bind_host=host,
            allowed_origins={origin.rstrip("/") for origin in config.allowed_origins},
            allowed_hosts=frozenset(name.lower() for name in config.allowed_hosts),
            widget_token=config.widget_token if config.widget_token is not None else config.token,
            serve_widget=config.serve_widget,
            notice=config.notice,
            max_pending_bytes=config.max_pending_bytes,
        )
        app = make_app(state, settings, max_frame_bytes=config.max_frame_bytes)
        try:
            sockets = bind_sockets(port, host, family=socket.AF_UNSPEC)
        except OSError as exc:
            raise OSError(exc.errno, f"binding local server on {host}:{port} failed: {exc.strerror}") from exc
        http_server = HTTPServer(app, xheaders=False)
        http_server.add_sockets(sockets)

        self = object.__new__(cls)
        self.host = host
        self.port = sockets[0].getsockname()[1]
        self.config = config
        self.state = state
        self._http = settings
        self._http_server = http_server
        self._stopped = False
        self._finalizer = weakref.finalize(self, _stop_listening, http_server, state)
        loop = asyncio.get_running_loop()
        self._sentinel = loop.create_task(_stop_when_loop_ends(weakref.ref(self)), name="smooth-nb loop watcher")
        loop.call_later(0.2, _warm_up_quietly)
        logger.info("smooth-nb local server listening on %s (%s)", self.ws_url, model.describe())
        return self

    # -- addresses ----------------------------------------------------------

    @property
    def addr(self) -> tuple[str, int]:
        """The bound ``(host, port)``; the port is real even when 0 was requested."""
        return self.host, self.port

    @property
    def http_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return self.http_url.replace("http://", "ws://", 1) + "/ws"

    @property
    def token(self) -> str | None:
        """The ``/ws`` token, or None when auth is off."""
        return self.config.token

    def allow_origin(self, origin: str) -> None:
        """Let browser pages from ``origin`` (``scheme://host[:port]``) open ``/ws`` and call ``/admin``."""
        self._http.allowed_origins.add(check_origin(origin))

    @property
    def allowed_origins(self) -> frozenset[str]:
        return frozenset(self._http.allowed_origins)

    @property
    def running(self) -> bool:
        return not self._stopped

    @property
    def knowledge(self) -> KnowledgeBase:
        return self.state.knowledge

    @property
    def model(self) -> ModelSettings:
        return self.state.router.settings

    def __repr__(self) -> str:
        status = "running" if self.running else "stopped"
        auth = "local-token" if self.token else "none"
        return f"<LocalServerHandle {self.ws_url} {status}, auth={auth}, model={self.model.mode}>"

    # -- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        """Stop listening, end running turns and close every socket, without waiting."""
        if self._stopped:
            return
        self._stopped = True
        self._finalizer.detach()
        _stop_listening(self._http_server, self.state)
        if not self._sentinel.done():
            self._sentinel.cancel()
        logger.info("smooth-nb local server on %s stopped", self.ws_url)

    async def shutdown(self) -> None:
        """Stop the server and wait until its turns and sockets have ended."""
        turns = [c.turn for c in list(self.state.connections) if c.turn is not None and not c.turn.done()]
        self.close()
        if turns:
            await asyncio.gather(*turns, return_exceptions=True)
        await self._http_server.close_all_connections()


def _stop_listening(http_server: HTTPServer, state: ServerState) -> None:
    state.closing = True
    http_server.stop()
    for connection in list(state.connections):
        if connection.turn is not None and not connection.turn.done():
            connection.send(
                protocol.error(connection.turn_request_id, protocol.SERVER_SHUTTING_DOWN, "the server stopped during this turn")
            )
            connection.turn.cancel()
        connection.close(1001, "server shutting down")


async def _stop_when_loop_ends(handle_ref: weakref.ref[LocalServerHandle]) -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        handle = handle_ref()
        if handle is not None:
            handle.close()
        raise


def _warm_up_quietly() -> None:
    try:
        warm_up()
    except Exception:  # the first turn reports the same import error with its context
        logger.debug("engine warm-up failed", exc_info=True)


async def serve_local(
    addr: str | tuple[str, int] = f"{DEFAULT_HOST}:{DEFAULT_PORT}",
    *,
    seed_kb: bool = False,
    config: ServerConfig | None = None,
    on_listening: Any = None,
) -> None:
    """Run a local server in the foreground until this coroutine is cancelled."""
    builder = LocalServer.builder().config(config).addr(addr)
    if seed_kb:
        builder.seed_kb(True)
    handle = await builder.spawn()
    if on_listening is not None:
        on_listening(handle)
    try:
        await asyncio.Event().wait()
    finally:
        await handle.shutdown()
