"""The ``/admin`` JSON API: what the server holds, and pushing events to sessions.

Every route but ``/admin/health`` needs the same token as ``/ws`` (as
``Authorization: Bearer``). Failures use the protocol's error envelope: 401 for
a missing or wrong token, 403 for a host or origin that is not allowed, 404 for
an unknown id. Browsers get CORS answers only for allowed origins.

Routes (all JSON):

- ``GET /admin/health``
- ``GET /admin/me``
- ``GET /admin/conversations``
- ``GET /admin/conversations/{id}/messages``
- ``GET /admin/document-sets``
- ``GET /admin/indexing/runs``
- ``POST /admin/publish`` with ``{"sessionId": ..., "event": {"type": ..., ...}}``
"""

from __future__ import annotations

import json
import logging
from typing import Any

from smooth_nb.server.http import GuardedHandler, error_body, request_token
from smooth_nb.server.store import wire_message

logger = logging.getLogger(__name__)

#: Largest accepted ``/admin/publish`` body.
MAX_PUBLISH_BYTES = 256 * 1024


class AdminHandler(GuardedHandler):
    """Base of the admin routes: token check and CORS for allowed origins."""

    def prepare(self) -> None:
        super().prepare()
        if self._finished:
            return
        origin = self.request.headers.get("Origin")
        if origin is not None:
            if not self.http.origin_allowed(origin, self.request.host):
                logger.warning("rejected %s %s from origin %s", self.request.method, self.request.path, origin[:200])
                self.send_json(403, error_body("FORBIDDEN_ORIGIN", f"origin {origin[:100]!r} is not allowed"))
                return
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")
        if self.request.method != "OPTIONS" and not self.public:
            self.authenticate()

    #: Routes that need no token.
    public = False

    def options(self, *args: Any, **kwargs: Any) -> None:
        # Reached only for allowed origins: prepare() rejected the others.
        self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()


class AdminHealth(AdminHandler):
    public = True

    def get(self) -> None:
        self.send_json(200, {"status": "ok"})


class AdminMe(AdminHandler):
    def get(self) -> None:
        principal = self.http.verifier.verify(request_token(self))
        self.send_json(200, {"principal": principal.id if principal else None, "auth": self.http.verifier.mode})


class AdminConversations(AdminHandler):
    def get(self) -> None:
        store = self.state.store
        items = []
        for session in store.sessions.values():
            messages = store.conversations[session.conversation_id].messages
            items.append(
                {
                    "conversationId": session.conversation_id,
                    "sessionId": session.session_id,
                    "agentId": session.agent_id,
                    "messageCount": len(messages),
                    "lastMessageAt": messages[-1].created_at.isoformat().replace("+00:00", "Z") if messages else None,
                }
            )
        self.send_json(200, {"conversations": items})


class AdminConversationMessages(AdminHandler):
    def get(self, conversation_id: str) -> None:
        store = self.state.store
        session = next((s for s in store.sessions.values() if s.conversation_id == conversation_id), None)
        if session is None:
            self.send_json(404, error_body("NOT_FOUND", f"conversation {conversation_id[:64]!r} not found"))
            return
        messages = store.conversations[conversation_id].messages
        self.send_json(200, {"messages": [wire_message(session, m) for m in messages]})


class AdminDocumentSets(AdminHandler):
    def get(self) -> None:
        self.send_json(200, {"documentSets": self.state.knowledge.document_sets()})


class AdminIndexingRuns(AdminHandler):
    def get(self) -> None:
        self.send_json(200, {"runs": self.state.knowledge.runs()})


class AdminPublish(AdminHandler):
    def post(self) -> None:
        if len(self.request.body) > MAX_PUBLISH_BYTES:
            self.send_json(413, error_body("VALIDATION_ERROR", f"body is over {MAX_PUBLISH_BYTES} bytes"))
            return
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            self.send_json(400, error_body("VALIDATION_ERROR", "body is not valid JSON"))
            return
        if not isinstance(body, dict) or not isinstance(body.get("sessionId"), str):
            self.send_json(400, error_body("VALIDATION_ERROR", "body must be {\"sessionId\": str, \"event\": {\"type\": str, ...}}"))
            return
        event = body.get("event")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.send_json(400, error_body("VALIDATION_ERROR", "'event' must be an object with a string 'type'"))
            return
        session_id = body["sessionId"]
        if session_id not in self.state.store.sessions:
            self.send_json(404, error_body("NOT_FOUND", f"session {session_id[:64]!r} not found"))
            return
        delivered = self.state.publish(session_id, event)
        self.send_json(200, {"delivered": delivered})


def admin_routes(handler_args: dict[str, Any]) -> list[Any]:
    return [
        (r"/admin/health", AdminHealth, handler_args),
        (r"/admin/me", AdminMe, handler_args),
        (r"/admin/conversations", AdminConversations, handler_args),
        (r"/admin/conversations/([^/]+)/messages", AdminConversationMessages, handler_args),
        (r"/admin/document-sets", AdminDocumentSets, handler_args),
        (r"/admin/indexing/runs", AdminIndexingRuns, handler_args),
        (r"/admin/publish", AdminPublish, handler_args),
    ]
