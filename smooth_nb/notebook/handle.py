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

    # -- addresses and state ------------------------------------------------

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

        return Chat(self.ws_url, self.token, create_fields, server=self)

    @property
    def turns(self) -> list[Any]:
        """Every turn of every session on this server, the widget's included, oldest first.

        Each :class:`~smooth_nb.notebook.turn.Turn` reads the server's live log,
        so a turn still streaming shows its latest frames when read again.
        """
        from smooth_nb.notebook.turn import Turn

        turns = []
        for record in self.handle.state.turn_log.records():
            turns.append(
                Turn(
                    record.request_id,
                    record.message,
                    (lambda r=record: r.frames),
                    server=self,
                    session_id=record.session_id,
                    actions=(lambda r=record: r.actions),
                )
            )
        return turns

    def tap(self, max_rows: int = 200) -> Any:
        """Return a live view of the frames flowing on all sessions (an ipywidget)."""
        from smooth_nb.notebook.tap import Tap

        return Tap(self.handle.state, max_rows=max_rows)

    # -- tools, knowledge and the scripted model ------------------------------------

    def tool(self, function: Any = None, *, name: str | None = None, confirm: bool = False) -> Any:
        """Register a Python function as a tool: ``@srv.tool`` or ``@srv.tool(confirm=True)``.

        The JSON Schema comes from the signature, type hints and docstring.
        Decorating a function of the same name again replaces the tool from the
        next turn on. The function is returned unchanged.
        """
        from smooth_nb.notebook.tooling import tool_from_function

        def register(target: Any) -> Any:
            built = tool_from_function(target, name=name, confirm=confirm)
            self.handle.state.tools[built.name] = built
            return target

        if function is None:
            return register
        return register(function)

    def remove_tool(self, name: str) -> None:
        if self.handle.state.tools.pop(name, None) is None:
            raise KeyError(f"no tool named {name!r}; registered: {sorted(self.handle.state.tools)}")

    @property
    def tools(self) -> dict[str, Any]:
        return dict(self.handle.state.tools)

    @property
    def kb(self) -> Any:
        """The knowledge base: ``add``, ``add_files``, ``search``, ``clear``."""
        from smooth_nb.notebook.tooling import KnowledgeView

        return KnowledgeView(self.handle.state.knowledge)

    @property
    def mock(self) -> Any:
        """Scripted replies: ``srv.mock.reply(text)``, ``srv.mock.tool_call(name, arguments)``."""
        from smooth_nb.notebook.tooling import MockQueue

        return MockQueue(self.handle.state.router)

    async def replay(
        self,
        message: str,
        history: list[dict[str, Any]],
        *,
        model: str | None = None,
        instructions: str | None = None,
        tools: Any = None,
    ) -> Any:
        """Send ``message`` in a fresh session seeded with ``history``; see :meth:`Turn.replay`."""
        state = self.handle.state
        chat = self.session()
        session_id = await chat.connect()
        session = state.store.get_session(session_id)
        for entry in history:
            direction = "inbound" if entry.get("role") == "user" else "outbound"
            state.store.append(session, direction, str(entry.get("content") or ""))
        overrides: dict[str, Any] = {}
        if instructions is not None:
            overrides["instructions"] = instructions
        if tools is not None:
            names = []
            for tool in tools:
                if callable(tool):
                    self.tool(tool)
                    names.append(tool.__name__)
                else:
                    names.append(str(tool))
            unknown = [n for n in names if n not in state.tools]
            if unknown:
                raise KeyError(f"unknown tools {unknown}; registered: {sorted(state.tools)}")
            overrides["tools"] = names
        if overrides:
            state.session_overrides[session_id] = overrides
        fields = {"model": model} if model is not None else {}
        return await chat.send(message, **fields)

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
