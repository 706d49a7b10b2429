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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smooth_nb.engine import LlmUnavailable, ModelRouter
from smooth_nb.server import protocol
from smooth_nb.server.interactions import INVALID_SUMMARY
from smooth_nb.server.knowledge import KnowledgeBase
from smooth_nb.server.protocol import ProtocolError
from smooth_nb.server.store import AGENT_NAME, MemoryStore, Session, StoreFull, wire_message
from smooth_nb.server.tools import Tool
from smooth_nb.server.turnlog import TurnLog, TurnRecord
from smooth_nb.server.turns import Park, start_turn

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
    #: Parked turns by session id: what each waits for from the client.
    parks: dict[str, Park] = field(default_factory=dict)
    #: Offer the Rich Interaction raise tools (request_identity_intake, request_choices).
    interactions: bool = True
    #: Seconds a parked confirmation waits before the tool is refused.
    confirmation_timeout: float = 3600.0
    #: Seconds of silence after which a connection gets a keepalive frame; 0 disables them.
    keepalive_seconds: float = 30.0
    #: How many of the newest stored messages a turn sends the model as history.
    history_messages: int = 50
    #: Called with every frame sent to any connection (the notebook's live views).
    frame_listeners: list[FrameListener] = field(default_factory=list)
    #: Sessions with a running or parked turn; never evicted.
    busy_sessions: set[str] = field(default_factory=set)
    #: Every turn's frames, model calls and tool tracebacks, for the notebook's debugging views.
    turn_log: TurnLog = field(default_factory=TurnLog)
    #: In-process overrides per session id: ``instructions`` (str) and ``tools`` (names to offer).
    session_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    closing: bool = False

    def __post_init__(self) -> None:
        self.store.is_busy = self.busy_sessions.__contains__

    def subscribers(self, session_id: str) -> list[Connection]:
        """Return the open connections that created or used the session."""
        return [connection for connection in self.connections if session_id in connection.sessions]

    def publish(self, session_id: str, event: dict[str, Any]) -> int:
        """Send ``event`` to every connection that used the session (the in-memory backplane); return how many."""
        connections = self.subscribers(session_id)
        for connection in connections:
            connection.send(event)
        return len(connections)


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
        #: The log record of this connection's current or last turn.
        self.record: TurnRecord | None = None
        #: Sessions this connection created or used; publishing to one reaches this socket.
        self.sessions: set[str] = set()
        self._last_sent = time.monotonic()
        self._keepalive: asyncio.Task[None] | None = None
        if state.keepalive_seconds > 0:
            self._keepalive = asyncio.get_running_loop().create_task(self._send_keepalives(state.keepalive_seconds))
        state.connections.add(self)

    # -- sending ------------------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        for listener in self.state.frame_listeners:
            try:
                listener(self, frame)
            except Exception:  # a broken notebook view must never break the protocol
                logger.exception("frame listener failed")
        self._last_sent = time.monotonic()
        record = self.record
        if record is not None and not record.done and frame.get("type") != "keepalive":
            record.add_frame(frame)
        self._send_text(json.dumps(frame, ensure_ascii=False, separators=(",", ":")))

    async def _send_keepalives(self, interval: float) -> None:
        while True:
            await asyncio.sleep(max(0.0, self._last_sent + interval - time.monotonic()))
            if time.monotonic() - self._last_sent < interval:
                continue
            running = self.turn is not None and not self.turn.done()
            request_id = self.turn_request_id if running and self.turn_request_id else "keepalive"
            self.send(protocol.keepalive(request_id, turn_running=running))

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
            if action in _TURN_ACTIONS and self.record is not None and not self.record.done:
                self.record.add_action(frame)
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
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self.turn is not None and not self.turn.done():
            self.turn.cancel()

    # -- actions ------------------------------------------------------------

    def _ping(self, frame: dict[str, Any], request_id: str | None) -> None:
        self.send(protocol.pong(request_id))

    def _create_session(self, frame: dict[str, Any], request_id: str | None) -> None:
        agent_id = protocol.required_str(frame, "agentId")
        if not agent_id.strip():
            raise ProtocolError(protocol.VALIDATION_ERROR, "invalid 'agentId': must not be empty")
        fields = {
            "user_name": protocol.optional_str(frame, "userName"),
            "user_email": protocol.optional_str(frame, "userEmail"),
            "supports": protocol.optional_str_list(frame, "supports"),
            "metadata": protocol.optional_object(frame, "metadata"),
        }
        protocol.optional_str(frame, "browserFingerprint")
        protocol.optional_object(frame, "authContext")
        try:
            session = self.state.store.create_session(agent_id, **fields)
        except StoreFull as exc:
            raise ProtocolError(protocol.SESSIONS_FULL, str(exc)) from None
        self.sessions.add(session.session_id)
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
        model = protocol.optional_str(frame, "model")
        protocol.optional_list(frame, "images")
        protocol.optional_list(frame, "files")
        skill = protocol.optional_str(frame, "skill")

        session = self._session(frame)
        if skill is not None:
            raise ProtocolError(protocol.SKILL_NOT_FOUND, f"skill {skill[:128]!r} not found: this server has no skills installed")
        if self.state.closing:
            raise ProtocolError(protocol.SERVER_SHUTTING_DOWN, "the server is shutting down; no new turns start")
        if self.turn is not None and not self.turn.done():
            raise ProtocolError(
                protocol.TURN_IN_PROGRESS,
                f"a turn (requestId {self.turn_request_id}) is still running on this connection; "
                "wait for its eventual_response or send cancel",
            )
        router = self.state.router
        try:
            router.check_available()
        except LlmUnavailable as exc:
            raise ProtocolError(protocol.LLM_UNAVAILABLE, str(exc)) from None
        if not self.state.store.has_room(session, 2):
            raise ProtocolError(
                protocol.CONVERSATION_FULL,
                f"this conversation contains the maximum of {self.state.store.max_messages} messages; start a new session",
            )

        self.sessions.add(session.session_id)
        if router.settings.mode == "script" and not router.scripted_pending:
            # The engine's mock returns an empty reply once its script is used up; the log says why.
            logger.warning("the scripted model has no replies left, so this turn returns an empty reply; restart the server to replay")
        turn_id = request_id if request_id is not None else protocol.new_id()
        self.turn_request_id = turn_id
        self.turn = start_turn(self, session, turn_id, text, stream=stream is not False, model=model)

    def _cancel(self, frame: dict[str, Any], request_id: str | None) -> None:
        protocol.optional_str(frame, "sessionId")
        if self.turn is not None and not self.turn.done():
            self.turn.cancel()

    def _confirm_tool_action(self, frame: dict[str, Any], request_id: str | None) -> None:
        session_id = protocol.required_str(frame, "sessionId")
        approved = protocol.optional_bool(frame, "approved")
        if approved is None:
            raise ProtocolError(protocol.VALIDATION_ERROR, "missing required field 'approved' (true or false)")
        park = self.state.parks.get(session_id)
        if park is None or park.kind != "confirmation" or park.future.done():
            raise ProtocolError(
                protocol.NO_PENDING_CONFIRMATION, f"no tool action is waiting for confirmation on session {session_id[:64]!r}"
            )
        self.send(protocol.immediate_response(request_id, 200, {"approved": approved, "toolId": park.tool_name}))
        park.future.set_result(approved)

    def _submit_interaction(self, frame: dict[str, Any], request_id: str | None) -> None:
        session_id = protocol.required_str(frame, "sessionId")
        interaction_id = protocol.required_str(frame, "interactionId")
        kind = protocol.optional_str(frame, "kind")
        values = protocol.optional_object(frame, "values")
        declined = protocol.optional_bool(frame, "declined")

        park = self.state.parks.get(session_id)
        if park is None or park.kind != "interaction" or park.future.done() or park.interaction is None:
            raise ProtocolError(protocol.NO_PENDING_INTERACTION, f"no interaction is waiting on session {session_id[:64]!r}")
        if interaction_id != park.interaction_id:
            raise ProtocolError(
                protocol.INTERACTION_MISMATCH,
                f"interactionId {interaction_id[:64]!r} does not match the parked interaction; the turn stays parked",
            )
        if kind is not None and kind != park.interaction.kind:
            raise ProtocolError(
                protocol.INTERACTION_MISMATCH,
                f"kind {kind[:64]!r} does not match the parked {park.interaction.kind!r} interaction; the turn stays parked",
            )

        echo = request_id if request_id is not None else park.request_id
        if declined:
            self.send(protocol.immediate_response(echo, 200, {"interactionId": interaction_id, "status": "declined"}))
            park.future.set_result({"status": "declined", "message": "The visitor declined; continue without these details."})
            return
        if values is None:
            raise ProtocolError(protocol.VALIDATION_ERROR, "missing 'values': send the values, or declined: true")
        normalized, errors = park.interaction.validate(park.spec or {}, values)
        if errors:
            data = {
                "interactionId": interaction_id,
                "kind": park.interaction.kind,
                "errors": [error.wire() for error in errors],
                "message": INVALID_SUMMARY,
            }
            self.send(protocol.turn_event("interaction_invalid", echo, data))
            return

        session = self.state.store.get_session(session_id)
        if session is not None and park.interaction.kind == "identity_intake":
            for key, meta_key in (("name", "userName"), ("email", "contactEmail"), ("phone", "contactPhone")):
                if key in normalized:
                    session.metadata[meta_key] = normalized[key]
        self.send(protocol.immediate_response(echo, 200, {"interactionId": interaction_id, "status": "submitted"}))
        park.future.set_result({"status": "submitted", "values": normalized})

    def _verify_otp(self, frame: dict[str, Any], request_id: str | None) -> None:
        protocol.required_str(frame, "sessionId")
        protocol.required_str(frame, "code")
        # No verification service is installed in the local flavor, so no code can
        # ever match: the gate stays closed.
        echo = request_id or protocol.new_id()
        data = {
            "error": "NOT_FOUND",
            "attemptsRemaining": 0,
            "message": "no one-time password is pending: this server has no OTP verification service installed",
        }
        self.send(protocol.turn_event("otp_invalid", echo, data))

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
        "confirm_tool_action": _confirm_tool_action,
        "submit_interaction": _submit_interaction,
        "verify_otp": _verify_otp,
    }


#: Actions that belong to the connection's running turn, kept in its log record.
_TURN_ACTIONS = frozenset({"confirm_tool_action", "submit_interaction", "cancel"})


def _session_data(session: Session) -> dict[str, Any]:
    return {
        "sessionId": session.session_id,
        "conversationId": session.conversation_id,
        "agentId": session.agent_id,
        "agentName": AGENT_NAME,
        "userParticipantId": session.user_participant_id,
        "agentParticipantId": session.agent_participant_id,
    }
