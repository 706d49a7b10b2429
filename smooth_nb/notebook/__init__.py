"""Notebook integration: the ``%smooth_local`` magic, the chat widget and the kernel's server.

Only this package imports IPython and ipywidgets; the server never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smooth_nb.notebook.handle import NotebookServer

# The kernel's one running server, set by `%smooth_local start`.
_running: NotebookServer | None = None


def running_server() -> NotebookServer | None:
    """Return the kernel's running server, or None when none is running."""
    if _running is not None and not _running.running:
        return None
    return _running


def set_running_server(server: NotebookServer | None) -> None:
    global _running
    _running = server
