"""The notebook's view of a running server: what ``%smooth_local start`` returns."""

from __future__ import annotations

import html
from typing import Any

from smooth_nb.engine import ModelSettings
from smooth_nb.server.local import LocalServerHandle


def notice_for(settings: ModelSettings) -> str | None:
    """Return the widget banner for a model, with how to switch in a notebook."""
    notice = settings.notice()
    if notice is not None and settings.mode == "offline":
        notice += " Then run %smooth_local stop and start again."
    return notice


class NotebookServer:
    """A local server running on this kernel's event loop.

    It exposes the handle's addresses and lifecycle, and shows the chat widget
    on request. ``smooth_nb.current()`` returns the running one.
    """

    def __init__(self, handle: LocalServerHandle) -> None:
        self.handle = handle

    # -- what the handle knows ----------------------------------------------

    @property
    def addr(self) -> tuple[str, int]:
        return self.handle.addr

    @property
    def ws_url(self) -> str:
        return self.handle.ws_url

    @property
    def http_url(self) -> str:
        return self.handle.http_url

    @property
    def token(self) -> str | None:
        return self.handle.token

    @property
    def running(self) -> bool:
        return self.handle.running

    @property
    def knowledge(self) -> Any:
        return self.handle.knowledge

    @property
    def model_mode(self) -> str:
        return self.handle.model.mode

    def notice(self) -> str | None:
        """Return the banner the widget shows, or None when a real model is connected."""
        return notice_for(self.handle.model)

    # -- lifecycle ----------------------------------------------------------

    def stop(self) -> None:
        """Stop the server now; open chats show that the server is gone."""
        self.handle.close()

    async def shutdown(self) -> None:
        await self.handle.shutdown()

    # -- driving turns --------------------------------------------------------

    def session(self, **create_fields: Any) -> Any:
        """Return a :class:`~smooth_nb.notebook.chat.Chat`; it connects on its first ``send``.

        ``create_fields`` go into ``create_conversation_session`` (``userName``,
        ``supports``, ``metadata``...).
        """
        from smooth_nb.notebook.chat import Chat

        return Chat(self.ws_url, self.token, create_fields)

    # -- display ------------------------------------------------------------

    def widget(self) -> Any:
        """Return a new chat widget connected to this server."""
        from smooth_nb.notebook.widget import ChatWidget

        return ChatWidget(self.ws_url, token=self.token, notice=self.notice(), allow_origin=self.handle.allow_origin)

    def status_lines(self) -> list[str]:
        state = "running" if self.running else "stopped"
        auth = "token" if self.token else "off"
        lines = [
            f"smooth-nb server {state} at {self.ws_url}",
            f"model: {self.handle.model.describe()}; auth: {auth}; knowledge: {len(self.knowledge)} documents",
        ]
        return lines

    def __repr__(self) -> str:
        return "\n".join(self.status_lines())

    def _repr_html_(self) -> str:
        first, *rest = self.status_lines()
        details = "".join(f"<div>{html.escape(line)}</div>" for line in rest)
        return (
            '<div style="font-family: var(--jp-code-font-family, monospace); font-size: 12px">'
            f"<strong>{html.escape(first)}</strong>{details}</div>"
        )
