"""The transport floor: a bare tornado WebSocket server with no engine, storage or validation.

It answers ``create_conversation_session`` and ``send_message`` with the same
frame shapes as smooth-nb (the 202 ack, one ``stream_token`` per word of the
reply, the ``eventual_response``), so the benchmark can tell how much of a
turn's cost is the WebSocket transport and JSON, and how much is everything else.

Run: ``python bench/floor_server.py --port 0 --reply TEXT``; it prints
``listening on ws://HOST:PORT/ws``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import time
import uuid

import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets


class FloorSocket(tornado.websocket.WebSocketHandler):
    def initialize(self, pieces: list[str], reply: str) -> None:
        self.pieces = pieces
        self.reply = reply

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self) -> None:
        self.set_nodelay(True)

    def send(self, frame: dict) -> None:
        self.write_message(json.dumps(frame, ensure_ascii=False, separators=(",", ":")))

    def on_message(self, message: str | bytes) -> None:
        frame = json.loads(message)
        request_id = frame.get("requestId")
        stamp = int(time.time() * 1000)
        if frame.get("action") == "create_conversation_session":
            data = {
                "sessionId": str(uuid.uuid4()),
                "conversationId": str(uuid.uuid4()),
                "agentId": frame.get("agentId"),
                "agentName": "floor",
                "userParticipantId": str(uuid.uuid4()),
                "agentParticipantId": str(uuid.uuid4()),
            }
            self.send({"type": "immediate_response", "status": 200, "data": data, "timestamp": stamp, "requestId": request_id})
        elif frame.get("action") == "send_message":
            self.send({"type": "immediate_response", "status": 202, "data": {"sessionId": frame.get("sessionId")}, "timestamp": stamp, "requestId": request_id})
            for piece in self.pieces:
                self.send({"type": "stream_token", "requestId": request_id, "token": piece, "data": {"requestId": request_id, "token": piece}})
            response = {"responseParts": [self.reply], "customerHappinessScore": 0.5, "needsSatisfactionScore": 0.5,
                        "requestSummary": "", "resolutionStatus": "resolved", "suggestedNextActions": []}
            data = {"messageId": str(uuid.uuid4()), "response": response, "needsEscalation": False,
                    "usage": {"promptTokens": 10, "completionTokens": 5}}
            self.send({"type": "eventual_response", "requestId": request_id, "status": 200,
                       "data": {"requestId": request_id, "status": 200, "data": data}, "timestamp": stamp})
        elif frame.get("action") == "ping":
            self.send({"type": "pong", "requestId": request_id, "timestamp": stamp, "data": {"timestamp": stamp}})


async def main() -> None:
    parser = argparse.ArgumentParser(description="bare tornado WebSocket floor for the benchmark")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply", default="Hello from the benchmark.")
    args = parser.parse_args()
    pieces = re.findall(r"\S+\s*|\s+", args.reply)
    app = tornado.web.Application([(r"/ws", FloorSocket, {"pieces": pieces, "reply": args.reply})])
    sockets = bind_sockets(args.port, args.host)
    server = HTTPServer(app)
    server.add_sockets(sockets)
    print(f"listening on ws://{args.host}:{sockets[0].getsockname()[1]}/ws", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    asyncio.run(main())
