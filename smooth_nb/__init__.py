"""smooth-nb: build, chat with and debug smooth-operator agents from a Jupyter notebook.

In a notebook::

    %load_ext smooth_nb
    %smooth_local start --seed-kb

From Python, without IPython::

    from smooth_nb import LocalServer
    server = await LocalServer.builder().addr("127.0.0.1:0").seed_kb(True).spawn()

Importing this package is cheap: the server, the engine and the notebook
integration load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from smooth_nb.notebook.handle import NotebookServer
    from smooth_nb.server import LocalServer, LocalServerHandle, ServerConfig, Tool, serve_local

__all__ = [
    "ExportError",
    "LocalServer",
    "LocalServerHandle",
    "ServerConfig",
    "Tool",
    "compare",
    "current",
    "serve_local",
    "__version__",
]

_SERVER_NAMES = frozenset({"LocalServer", "LocalServerBuilder", "LocalServerHandle", "ServerConfig", "Tool", "serve_local"})


def __getattr__(name: str) -> Any:
    # Deferred so that `import smooth_nb` and `%load_ext smooth_nb` do not load tornado handlers or the engine.
    if name in _SERVER_NAMES:
        from smooth_nb import server

        return getattr(server, name)
    if name == "ExportError":
        from smooth_nb.notebook.export import ExportError

        return ExportError
    raise AttributeError(f"module 'smooth_nb' has no attribute {name!r}")


def current() -> NotebookServer | None:
    """Return this kernel's running server, started by ``%smooth_local start``, or None."""
    from smooth_nb.notebook import running_server

    return running_server()


def compare(a: Any, b: Any) -> Any:
    """Show two turns side by side: text, tools, citations, tokens and time."""
    from smooth_nb.notebook.views import compare as compare_turns

    return compare_turns(a, b)


def load_ipython_extension(ipython: Any) -> None:
    from smooth_nb.notebook.magics import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from smooth_nb.notebook.magics import unload

    unload(ipython)
