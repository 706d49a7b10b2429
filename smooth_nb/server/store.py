"""In-memory sessions, conversations and messages.

The local flavor keeps everything in process memory: nothing is written to disk
and nothing survives the server. Each session owns one conversation; messages
are appended in order and paged newest first with an opaque cursor (the id of
the oldest message of the previous page).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from smooth_nb.server.protocol import new_id

#: Display name of the one agent the local flavor serves.
AGENT_NAME = "smooth-nb local agent"


@dataclass(slots=True)
class Message:
    id: str
    direction: str  # "inbound" (from the user) or "outbound" (from the agent)
    text: str
    created_at: datetime
    structured: dict[str, Any] | None = None

    @property
    def role(self) -> str:
        return "user" if self.direction == "inbound" else "assistant"


@dataclass(slots=True)
class Session:
    session_id: str
    conversation_id: str
    agent_id: str
    user_participant_id: str
    agent_participant_id: str
    user_name: str | None = None
    user_email: str | None = None
    supports: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Conversation:
    conversation_id: str
    messages: list[Message] = field(default_factory=list)
    index_by_id: dict[str, int] = field(default_factory=dict)


class StoreFull(Exception):
    """A cap of the in-memory store is reached and nothing can be evicted."""


class ConversationFull(StoreFull):
    """The conversation reached its message cap."""


class MemoryStore:
    """Sessions and their conversations, held in dictionaries, with caps.

    At ``max_sessions`` the least recently used session that ``is_busy`` does
    not protect is evicted with its conversation. A conversation contains at most
    ``max_messages`` messages; :meth:`append` raises :class:`ConversationFull`
    past that, so history is never dropped silently.
    """

    def __init__(self, *, max_sessions: int = 10_000, max_messages: int = 2_000) -> None:
        if max_sessions < 1 or max_messages < 2:
            raise ValueError("max_sessions must be at least 1 and max_messages at least 2")
        self.max_sessions = max_sessions
        self.max_messages = max_messages
        # Insertion order is recency order: get_session moves a session to the end.
        self.sessions: dict[str, Session] = {}
        self.conversations: dict[str, Conversation] = {}
        #: Returns True for sessions that must not be evicted (a running or parked turn).
        self.is_busy: Any = lambda session_id: False

    def create_session(
        self,
        agent_id: str,
        *,
        user_name: str | None = None,
        user_email: str | None = None,
        supports: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Session:
        session = Session(
            session_id=new_id(),
            conversation_id=new_id(),
            agent_id=agent_id,
            user_participant_id=new_id(),
            agent_participant_id=new_id(),
            user_name=user_name,
            user_email=user_email,
            supports=list(supports or []),
            metadata=dict(metadata or {}),
        )
        self._make_room()
        self.sessions[session.session_id] = session
        self.conversations[session.conversation_id] = Conversation(session.conversation_id)
        return session

    def _make_room(self) -> None:
        while len(self.sessions) >= self.max_sessions:
            victim = next((s for s in self.sessions.values() if not self.is_busy(s.session_id)), None)
            if victim is None:
                raise StoreFull(f"all {self.max_sessions} sessions have a turn running or parked; none can be evicted")
            del self.sessions[victim.session_id]
            del self.conversations[victim.conversation_id]

    def get_session(self, session_id: str) -> Session | None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            self.sessions[session_id] = session  # moved to the end: the most recently used
        return session

    def append(self, session: Session, direction: str, text: str, structured: dict[str, Any] | None = None) -> Message:
        conversation = self.conversations[session.conversation_id]
        if len(conversation.messages) >= self.max_messages:
            raise ConversationFull(
                f"conversation {session.conversation_id} contains the maximum of {self.max_messages} messages; "
                "start a new session to continue"
            )
        message = Message(
            id=new_id(),
            direction=direction,
            text=text,
            created_at=datetime.now(timezone.utc),
            structured=structured,
        )
        conversation.index_by_id[message.id] = len(conversation.messages)
        conversation.messages.append(message)
        return message

    def has_room(self, session: Session, count: int) -> bool:
        return len(self.conversations[session.conversation_id].messages) + count <= self.max_messages

    def history(self, session: Session, last: int | None = None) -> list[Message]:
        """Return the session's messages, oldest first; only the newest ``last`` when given."""
        messages = self.conversations[session.conversation_id].messages
        if last is None:
            return list(messages)
        return messages[-last:] if last > 0 else []

    def page(self, session: Session, limit: int, cursor: str | None) -> tuple[list[Message], str | None]:
        """Return up to ``limit`` messages newest first, older than ``cursor``.

        The second item is the cursor for the next page, or None when no older
        message is left. An unknown cursor raises KeyError.
        """
        conversation = self.conversations[session.conversation_id]
        end = len(conversation.messages) if cursor is None else conversation.index_by_id[cursor]
        start = max(0, end - limit)
        page = conversation.messages[start:end][::-1]
        next_cursor = page[-1].id if start > 0 and page else None
        return page, next_cursor


def wire_message(session: Session, message: Message) -> dict[str, Any]:
    """Render a stored message as the protocol's ``ConversationMessage``."""
    user = {"id": session.user_participant_id, "type": "user"}
    if session.user_name:
        user["name"] = session.user_name
    agent = {"id": session.agent_participant_id, "type": "agent", "name": AGENT_NAME}
    sender, recipient = (user, agent) if message.direction == "inbound" else (agent, user)
    content: dict[str, Any] = {"text": message.text}
    if message.structured is not None:
        content["structuredResponse"] = message.structured
    return {
        "id": message.id,
        "direction": message.direction,
        "content": content,
        "from": sender,
        "to": recipient,
        "createdAt": message.created_at.isoformat().replace("+00:00", "Z"),
    }
