"""Action dispatch: one :class:`Connection` per WebSocket, sharing a :class:`ServerState`.

A connection parses each text frame, checks its fields and answers with the
frames the protocol prescribes. Bad input never closes the socket: it becomes an
``error`` event carrying a code, a message and the frame's ``requestId`` when it
had one. A turn runs as an asyncio task on the current loop, so the connection
keeps reading (``ping``, ``cancel``) while the model streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smooth_nb.engine import LlmUnavailable, ModelRouter
from smooth_nb.server import protocol
from smooth_nb.server.knowledge import KnowledgeBase
from smooth_nb.server.protocol import ProtocolError
from smooth_nb.server.store import AGENT_NAME, MemoryStore, Session, wire_message
from smooth_nb.server.tools import Tool

logger = logging.getLogger(__name__)

FrameListener = Callable[["Connection", dict[str, Any]], None]


@dataclass
class ServerState:
    """Everything the connections of one server share."""

    router: ModelRouter
    store: MemoryStore = field(default_factory=MemoryStore)
    knowledge: KnowledgeBase = field(default_factory=KnowledgeBase)
    tools: dict[str, Tool] = field(default_factory=dict)
    instructions: str | None = None
    connections: set[Connection] = field(default_factory=set)
    #: Called with every frame sent to any connection (the notebook's live views).
    frame_listeners: list[FrameListener] = field(default_factory=list)
    closing: bool = False


class Connection:
    """The protocol state of one WebSocket: its sender and its running turn."""

    def __init__(
        self,
        state: ServerState,
        send: Callable[[str], None],
        close: Callable[[int, str], None],
        *,
        peer: str = "",
    ) -> None:
        self.state = state
        self._send_text = send
        self.close = close
        self.peer = peer
        self.turn: asyncio.Task[None] | None = None
        self.turn_request_id: str | None = None
        state.connections.add(self)

    # -- sending ------------------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        for listener in self.state.frame_listeners:
            try:
                listener(self, frame)
            except Exception:  # a broken notebook view must never break the protocol
                logger.exception("frame listener failed")
        self._send_text(json.dumps(frame, ensure_ascii=False, separators=(",", ":")))

    # -- receiving ----------------------------------------------------------

    def handle_text(self, raw: str | bytes) -> None:
        """Parse one inbound frame and dispatch it; never raises."""
        request_id: str | None = None
        try:
            if isinstance(raw, bytes):
                raise ProtocolError(protocol.VALIDATION_ERROR, "binary frames are not supported; send JSON text frames")
            try:
                frame = json.loads(raw)
            except ValueError:
                raise ProtocolError(protocol.VALIDATION_ERROR, "frame is not valid JSON") from None
            if not isinstance(frame, dict):
                raise ProtocolError(protocol.VALIDATION_ERROR, "frame must be a JSON object")
            if isinstance(frame.get("requestId"), str):
                request_id = frame["requestId"]
            elif "requestId" in frame:
                raise ProtocolError(protocol.VALIDATION_ERROR, "invalid 'requestId': expected a string")
            action = frame.get("action")
            if action is None:
                raise ProtocolError(protocol.VALIDATION_ERROR, "missing required field 'action'")
            if not isinstance(action, str):
                raise ProtocolError(protocol.VALIDATION_ERROR, "invalid 'action': expected a string")
            handler = self._handlers.get(action)
            if handler is None:
                raise ProtocolError(protocol.UNSUPPORTED_ACTION, f"unsupported action {action[:64]!r}")
            handler(self, frame, request_id)
        except ProtocolError as exc:
            self.send(protocol.error(request_id, exc.code, exc.message))
        except Exception as exc:
            logger.exception("action failed on connection %s (requestId %s)", self.peer, request_id)
            self.send(protocol.error(request_id, "INTERNAL_ERROR", f"the server failed to handle this frame: {exc}"))

    def closed(self) -> None:
        """Release the connection: a turn still running ends with it."""
        self.state.connections.discard(self)
        if self.turn is not None and not self.turn.done():
            self.turn.cancel()

    # -- actions ------------------------------------------------------------

    def _ping(self, frame: dict[str, Any], request_id: str | None) -> None:
        self.send(protocol.pong(request_id))

    def _create_session(self, frame: dict[str, Any], request_id: str | None) -> None:
        agent_id = protocol.required_str(frame, "agentId")
        if not agent_id.strip():
            raise ProtocolError(protocol.VALIDATION_ERROR, "invalid 'agentId': must not be empty")
        session = self.state.store.create_session(
            agent_id,
            user_name=protocol.optional_str(frame, "userName"),
            user_email=protocol.optional_str(frame, "userEmail"),
            supports=protocol.optional_str_list(frame, "supports"),
            metadata=protocol.optional_object(frame, "metadata"),
        )
        protocol.optional_str(frame, "browserFingerprint")
        logger.debug("session %s created", session.session_id)
        self.send(protocol.immediate_response(request_id, 200, _session_data(session)))

    def _get_session(self, frame: dict[str, Any], request_id: str | None) -> None:
        session = self._session(frame)
        data = _session_data(session)
        data["status"] = "active" if self.turn is not None and not self.turn.done() else "idle"
        self.send(protocol.immediate_response(request_id, 200, data))

    def _get_messages(self, frame: dict[str, Any], request_id: str | None) -> None:
        limit = protocol.optional_int(frame, "limit", minimum=1, maximum=100) or 50
        cursor = protocol.optional_str(frame, "cursor")
        session = self._session(frame)
        try:
            messages, next_cursor = self.state.store.page(session, limit, cursor)
        except KeyError:
            raise ProtocolError(protocol.VALIDATION_ERROR, "invalid 'cursor': it names no message of this conversation") from None
        data = {
            "messages": [wire_message(session, message) for message in messages],
            "nextCursor": next_cursor,
            "hasMore": next_cursor is not None,
        }
        self.send(protocol.immediate_response(request_id, 200, data))

    def _send_message(self, frame: dict[str, Any], request_id: str | None) -> None:
        from smooth_nb.server.turns import start_turn

        protocol.required_str(frame, "sessionId")
        text = protocol.required_str(frame, "message")
        if not text.strip():
            raise ProtocolError(protocol.VALIDATION_ERROR, "invalid 'message': must not be empty")
        if len(text) > protocol.MESSAGE_MAX_CHARS:
            raise ProtocolError(
                protocol.VALIDATION_ERROR,
                f"invalid 'message': {len(text)} characters is over the limit of {protocol.MESSAGE_MAX_CHARS}",
            )
        stream = protocol.optional_bool(frame, "stream")
        protocol.optional_str(frame, "model")
        session = self._session(frame)
        if self.state.closing:
            raise ProtocolError(protocol.SERVER_SHUTTING_DOWN, "the server is shutting down; no new turns start")
        if self.turn is not None and not self.turn.done():
            raise ProtocolError(
                protocol.TURN_IN_PROGRESS,
                f"a turn (requestId {self.turn_request_id}) is still running on this connection; "
                "wait for its eventual_response or send cancel",
            )
        try:
            self.state.router.check_available()
        except LlmUnavailable as exc:
            raise ProtocolError(protocol.LLM_UNAVAILABLE, str(exc)) from None
        turn_id = request_id if request_id is not None else protocol.new_id()
        self.turn_request_id = turn_id
        self.turn = start_turn(self, session, turn_id, text, stream=stream is not False)

    def _cancel(self, frame: dict[str, Any], request_id: str | None) -> None:
        protocol.optional_str(frame, "sessionId")
        if self.turn is not None and not self.turn.done():
            self.turn.cancel()

    def _session(self, frame: dict[str, Any]) -> Session:
        session_id = protocol.required_str(frame, "sessionId")
        session = self.state.store.get_session(session_id)
        if session is None:
            raise ProtocolError(
                protocol.SESSION_NOT_FOUND,
                f"session {session_id[:64]!r} not found; create one with create_conversation_session",
            )
        return session

    _handlers: dict[str, Callable[[Connection, dict[str, Any], str | None], None]] = {
        "ping": _ping,
        "create_conversation_session": _create_session,
        "get_session": _get_session,
        "get_conversation_messages": _get_messages,
        "send_message": _send_message,
        "cancel": _cancel,
    }


def _session_data(session: Session) -> dict[str, Any]:
    return {
        "sessionId": session.session_id,
        "conversationId": session.conversation_id,
        "agentId": session.agent_id,
        "agentName": AGENT_NAME,
        "userParticipantId": session.user_participant_id,
        "agentParticipantId": session.agent_participant_id,
    }
