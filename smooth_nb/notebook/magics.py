"""The ``%smooth_local`` line magic.

``start`` binds the server before the cell returns and serves from the kernel's
own asyncio loop: no thread and no subprocess. The server stops on
``%smooth_local stop``, on ``%unload_ext smooth_nb`` and when the kernel exits.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import secrets
import shlex
from typing import Any

from smooth_nb import notebook

logger = logging.getLogger(__name__)

USAGE = """\
%smooth_local start [--seed-kb] [--port N] [--host H] [--mock-reply TEXT] [--offline]
                    [--scenario FILE] [--token T | --no-auth] [--origin URL ...]
%smooth_local stop | status | widget

start     Start a local smooth-operator server on this kernel's event loop and show
          a chat widget. The cell returns at once.
            --seed-kb         load the demo knowledge base (policies/returns.md,
                              policies/shipping.md)
            --port N          port to bind (default 0: any free port)
            --host H          address to bind (default 127.0.0.1)
            --mock-reply TEXT answer every turn with TEXT, no model
            --offline         no model: answer with the best knowledge-base passage.
                              This is also the mode when SMOOAI_GATEWAY_KEY is not set.
            --scenario FILE   replay a conformance scenario file: its scripted model,
                              tools, confirmation tools and knowledge
            --token T         require token T on /ws (default: a random token)
            --no-auth         accept connections without a token
            --origin URL      also accept WebSocket connections from this browser origin
          The model is read from SMOOAI_GATEWAY_URL, SMOOAI_GATEWAY_KEY and
          SMOOTH_AGENT_MODEL.
stop      Stop the server; the port is free again.
status    Show where the server listens and which model it uses.
widget    Show the chat widget again.
"""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise _UsageError(message)


def _start_parser() -> _Parser:
    parser = _Parser(prog="%smooth_local start", add_help=False)
    parser.add_argument("--seed-kb", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--mock-reply")
    model.add_argument("--offline", action="store_true")
    model.add_argument("--scenario")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--token")
    auth.add_argument("--no-auth", action="store_true")
    parser.add_argument("--origin", action="append", default=[])
    return parser


def smooth_local(line: str) -> Any:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        print(f"%smooth_local: cannot parse arguments: {exc}")
        return None
    if not words:
        print(USAGE)
        return None
    command, rest = words[0], words[1:]
    if command == "start":
        return _start(rest)
    if rest:
        print(f"%smooth_local {command} takes no arguments; got {' '.join(rest)!r}")
        return None
    if command == "stop":
        return _stop()
    if command == "status":
        return _status()
    if command == "widget":
        return _widget()
    print(f"%smooth_local: unknown command {command!r}\n\n{USAGE}")
    return None


smooth_local.__doc__ = USAGE


def _start(words: list[str]) -> Any:
    import asyncio

    from IPython.display import display

    from smooth_nb.engine import ModelSettings
    from smooth_nb.notebook.handle import NotebookServer, notice_for
    from smooth_nb.server.local import LocalServer

    try:
        args = _start_parser().parse_args(words)
    except _UsageError as exc:
        print(f"%smooth_local start: {exc}\n\n{USAGE}")
        return None
    running = notebook.running_server()
    if running is not None:
        print(f"A smooth-nb server is already running at {running.ws_url}; here is its chat. Run %smooth_local stop to restart it.")
        display(running.widget())
        return running
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        print(
            "%smooth_local start needs a running asyncio loop, as in a Jupyter kernel (ipykernel 6 or newer). "
            "In a terminal, run: python -m smooth_nb serve"
        )
        return None

    model = ModelSettings.from_env(mock_reply=args.mock_reply, offline=args.offline, offline_without_key=True)
    token = None if args.no_auth else (args.token or secrets.token_urlsafe(24))
    try:
        builder = LocalServer.builder().addr((args.host, args.port)).seed_kb(args.seed_kb).model(model)
        builder.auth(token).serve_widget()
        if args.scenario:
            from smooth_nb.server.scenario import configure_builder, load_scenario

            configure_builder(builder, load_scenario(args.scenario))
            model = builder.model_settings
        origins = tuple(args.origin) + tuple(sorted(jupyter_server_origins()))
        builder.config(allowed_origins=origins, notice=notice_for(model))
        handle = builder.start()
    except (OSError, ValueError) as exc:  # bad address or port, busy port, unusable scenario file
        print(f"%smooth_local start: {exc}")
        return None
    server = NotebookServer(handle)
    notebook.set_running_server(server)
    _register_exit_hook()

    if server.notice():
        print(server.notice())
    display(server.widget())
    return server


_NOT_RUNNING = "No smooth-nb server is running in this kernel. Start one with %smooth_local start."


def _stop_running() -> Any:
    """Stop the kernel's server and forget it; return it, or None when none was running."""
    server = notebook.running_server()
    if server is not None:
        server.stop()
        notebook.set_running_server(None)
    return server


def _stop() -> None:
    server = _stop_running()
    if server is None:
        print(_NOT_RUNNING)
        return
    print(f"Stopped the smooth-nb server at {server.ws_url}.")


def _status() -> Any:
    server = notebook.running_server()
    if server is None:
        print(_NOT_RUNNING)
    return server


def _widget() -> None:
    from IPython.display import display

    server = notebook.running_server()
    if server is None:
        print(_NOT_RUNNING)
        return
    display(server.widget())


def jupyter_server_origins() -> set[str]:
    """Return the browser origins of the Jupyter server that started this kernel, when it can be found.

    The server's runtime file (``jpserver-<pid>.json``) gives its URL; the pid
    is the ``JPY_PARENT_PID`` the kernel was started with. A front-end that is
    not a Jupyter server (VS Code, for example) is found through the widget
    instead, which reports its page's origin over the comm.
    """
    import glob
    import json
    import os
    from urllib.parse import urlsplit

    parent = os.environ.get("JPY_PARENT_PID")
    if not parent:
        return set()
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        runtime = jupyter_runtime_dir()
    except ImportError:
        return set()
    origins: set[str] = set()
    for path in glob.glob(os.path.join(runtime, "jpserver-*.json")) + glob.glob(os.path.join(runtime, "nbserver-*.json")):
        try:
            with open(path, encoding="utf-8") as handle:
                info = json.load(handle)
        except (OSError, ValueError):
            continue
        if str(info.get("pid")) != parent or not isinstance(info.get("url"), str):
            continue
        url = urlsplit(info["url"])
        if not url.scheme or not url.netloc:
            continue
        origins.add(f"{url.scheme}://{url.netloc}")
        if url.hostname in ("localhost", "127.0.0.1") and url.port:
            origins.add(f"{url.scheme}://localhost:{url.port}")
            origins.add(f"{url.scheme}://127.0.0.1:{url.port}")
    return origins


_exit_hook_registered = False


def _register_exit_hook() -> None:
    global _exit_hook_registered
    if not _exit_hook_registered:
        atexit.register(_stop_at_exit)
        _exit_hook_registered = True


def _stop_at_exit() -> None:
    _stop_running()


def load(ipython: Any) -> None:
    ipython.register_magic_function(smooth_local, magic_kind="line", magic_name="smooth_local")


def unload(ipython: Any) -> None:
    _stop_running()
    ipython.magics_manager.magics["line"].pop("smooth_local", None)
