"""In-memory sessions, conversations and messages.

The local flavor keeps everything in process memory: nothing is written to disk
and nothing survives the server. Each session owns one conversation; messages
are appended in order and paged newest first with an opaque cursor (the id of
the oldest message of the previous page).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from smooth_nb.server.protocol import new_id

#: Display name of the one agent the local flavor serves.
AGENT_NAME = "smooth-nb local agent"


@dataclass
class Message:
    id: str
    direction: str  # "inbound" (from the user) or "outbound" (from the agent)
    text: str
    created_at: datetime
    structured: dict[str, Any] | None = None

    @property
    def role(self) -> str:
        return "user" if self.direction == "inbound" else "assistant"


@dataclass
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
    last_active: float = field(default_factory=time.monotonic)


@dataclass
class Conversation:
    conversation_id: str
    messages: list[Message] = field(default_factory=list)
    index_by_id: dict[str, int] = field(default_factory=dict)


class MemoryStore:
    """Sessions and their conversations, held in dictionaries."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.conversations: dict[str, Conversation] = {}

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
        self.sessions[session.session_id] = session
        self.conversations[session.conversation_id] = Conversation(session.conversation_id)
        return session

    def get_session(self, session_id: str) -> Session | None:
        session = self.sessions.get(session_id)
        if session is not None:
            session.last_active = time.monotonic()
        return session

    def append(self, session: Session, direction: str, text: str, structured: dict[str, Any] | None = None) -> Message:
        conversation = self.conversations[session.conversation_id]
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

    def history(self, session: Session) -> list[Message]:
        """Return the session's messages, oldest first."""
        return list(self.conversations[session.conversation_id].messages)

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
