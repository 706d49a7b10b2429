"""Stand-in LLM gateway: a loopback HTTP server that speaks the OpenAI chat API.

Tests, notebooks and benchmarks start this script in place of a real LLM
gateway. It is not a model. It builds each reply from fixed rules applied to
what the request contains, so a test can read the reply and tell what the
caller sent. It uses only the standard library, so it starts fast and needs
nothing installed.

Run it in the foreground::

    python tests/support/stand_in_gateway.py --port 0 --key test-key

It prints one line, ``listening on http://HOST:PORT/v1``, and then serves
until SIGTERM or SIGINT, after which it exits with code 0. From Python, use
``run_stand_in_gateway()``, which starts the script as a child process and
stops it on exit.

Endpoints:

- ``POST /v1/chat/completions`` takes an OpenAI chat-completions request and
  returns a ``chat.completion`` object, or with ``"stream": true`` a
  server-sent event stream of ``chat.completion.chunk`` objects that ends with
  ``data: [DONE]``. A usage chunk with empty ``choices`` comes before
  ``[DONE]`` when ``stream_options.include_usage`` is true.
- ``GET /v1/models`` lists the single model ``stand-in``.
- ``GET /health`` returns ``ok`` and never needs a key.

When ``--key`` is set, both ``/v1`` endpoints require
``Authorization: Bearer KEY`` and reject anything else with 401.

Reply rules, checked in this order:

1. Tool call. The request has ``tools``, the last user message contains
   ``call tool NAME`` where NAME is one of those tools, and no ``tool`` message
   follows that user message. The reply is a call to NAME. Its arguments are
   the JSON object after ``with`` in the user message (as in
   ``call tool add with {"a": 2, "b": 3}``), or ``{}`` when there is none.
2. Tool result. A ``tool`` message follows the last user message. The reply is
   ``Tool NAME returned: CONTENT`` for the last such message.
3. Fixed reply. ``--model-reply TEXT`` was given, so the reply is TEXT.
4. Knowledge base. A system message contains a line starting with
   ``Knowledge base`` followed by passage lines of the form
   ``[source] content``. The reply is ``CONTENT (source: SOURCE)`` for the
   passage whose content shares the most distinct words with the last user
   message. Words are lowercase runs of letters and digits, and a tie goes to
   the passage that comes first. A passage with no shared words can still win.
5. Otherwise the reply is
   ``I don't know; no knowledge base passage was provided.``

Token counts in ``usage`` are whitespace-separated words, at least 1: the
prompt count covers the text of all messages, the completion count the reply
text or the tool call's name and arguments.

``--log FILE`` appends one JSON line per chat request with the path, whether
the authorization was accepted and the request body. The key is never
written.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import itertools
import json
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger("stand_in_gateway")

MODEL_ID = "stand-in"
NO_KNOWLEDGE_REPLY = "I don't know; no knowledge base passage was provided."

# Larger request bodies are rejected with 413 so a bad client cannot make the
# server buffer without bound.
MAX_BODY_BYTES = 16 * 1024 * 1024

KNOWLEDGE_HEADER_PREFIX = "Knowledge base"
PASSAGE_LINE = re.compile(r"^\s*\[([^\]]+)\]\s*(.*?)\s*$")
WORD = re.compile(r"[^\W_]+")
TOOL_REQUEST = re.compile(r"call tool ([A-Za-z0-9_-]+)")

# ---------------------------------------------------------------------------
# Reply rules
# ---------------------------------------------------------------------------


@dataclass
class ToolCall:
    """A function call that the stand-in returns for the caller to run."""

    call_id: str
    name: str
    arguments: str


@dataclass
class Reply:
    """The outcome of one chat request: either text or one tool call."""

    text: str | None = None
    tool_call: ToolCall | None = None

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_call is not None else "stop"


_call_counter = itertools.count(1)


def message_text(message: dict[str, Any]) -> str:
    """Join the text of a message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "\n".join(texts)
    return ""


def tokenize(text: str) -> list[str]:
    """Split text into lowercase words of letters and digits."""
    return WORD.findall(text.lower())


def count_tokens(text: str) -> int:
    """Count whitespace-separated words, with a minimum of 1."""
    return max(1, len(text.split()))


def parse_knowledge_passages(system_text: str) -> list[tuple[str, str]]:
    """Return the (source, content) passages of every knowledge base block.

    A block starts at a line beginning with ``Knowledge base`` and runs over
    the ``[source] content`` lines after it. Blank lines inside a block are
    skipped, and any other line ends the block.
    """
    passages = []
    in_block = False
    for line in system_text.splitlines():
        if line.strip().startswith(KNOWLEDGE_HEADER_PREFIX):
            in_block = True
            continue
        if not in_block:
            continue
        if not line.strip():
            continue
        match = PASSAGE_LINE.match(line)
        if match is None:
            in_block = False
            continue
        passages.append((match.group(1).strip(), match.group(2)))
    return passages


def pick_passage(question: str, passages: list[tuple[str, str]]) -> tuple[str, str]:
    """Return the passage whose content shares the most words with the question."""
    question_words = set(tokenize(question))
    best = passages[0]
    best_overlap = -1
    for source, content in passages:
        overlap = len(question_words & set(tokenize(content)))
        if overlap > best_overlap:
            best, best_overlap = (source, content), overlap
    return best


def requested_tool_names(body: dict[str, Any]) -> set[str]:
    tools = body.get("tools")
    if not isinstance(tools, list):
        return set()
    names = set()
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


def parse_tool_arguments(user_text: str, name_end: int) -> str:
    """Return the JSON object after ``with`` following the tool name, or ``{}``.

    The arguments are re-encoded, so the caller always gets compact valid
    JSON. Text after ``with`` that is not a JSON object gives ``{}``.
    """
    rest = user_text[name_end:]
    with_match = re.match(r"\s+with\s+", rest)
    if with_match is None:
        return "{}"
    try:
        arguments, _ = json.JSONDecoder().raw_decode(rest[with_match.end():])
    except json.JSONDecodeError:
        return "{}"
    if not isinstance(arguments, dict):
        return "{}"
    return json.dumps(arguments, ensure_ascii=False)


def tool_name_for_result(messages: list[dict[str, Any]], tool_message: dict[str, Any]) -> str:
    """Return the function name of the tool call that a tool message responds to."""
    call_id = tool_message.get("tool_call_id")
    for message in messages:
        if message.get("role") != "assistant":
            continue
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            if not isinstance(call, dict) or call.get("id") != call_id:
                continue
            function = call.get("function")
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                return function["name"]
    name = tool_message.get("name")
    return name if isinstance(name, str) else "unknown"


def decide_reply(body: dict[str, Any], model_reply: str | None) -> Reply:
    """Apply the reply rules in the module docstring to one request body."""
    messages = [m for m in body["messages"] if isinstance(m, dict)]

    last_user_index = None
    for index, message in enumerate(messages):
        if message.get("role") == "user":
            last_user_index = index
    user_text = message_text(messages[last_user_index]) if last_user_index is not None else ""
    after_user = messages[last_user_index + 1:] if last_user_index is not None else messages
    tool_results = [m for m in after_user if m.get("role") == "tool"]

    if not tool_results:
        tool_names = requested_tool_names(body)
        for match in TOOL_REQUEST.finditer(user_text):
            name = match.group(1)
            if name in tool_names:
                call_id = f"call_standin_{next(_call_counter)}"
                arguments = parse_tool_arguments(user_text, match.end())
                return Reply(tool_call=ToolCall(call_id, name, arguments))
    else:
        last_result = tool_results[-1]
        name = tool_name_for_result(messages, last_result)
        return Reply(text=f"Tool {name} returned: {message_text(last_result)}")

    if model_reply is not None:
        return Reply(text=model_reply)

    passages = []
    for message in messages:
        if message.get("role") in ("system", "developer"):
            passages.extend(parse_knowledge_passages(message_text(message)))
    if not passages:
        return Reply(text=NO_KNOWLEDGE_REPLY)
    source, content = pick_passage(user_text, passages)
    return Reply(text=f"{content} (source: {source})")


def usage_for(body: dict[str, Any], reply: Reply) -> dict[str, int]:
    prompt_text = "\n".join(message_text(m) for m in body["messages"] if isinstance(m, dict))
    if reply.tool_call is not None:
        completion_text = f"{reply.tool_call.name} {reply.tool_call.arguments}"
    else:
        completion_text = reply.text or ""
    prompt_tokens = count_tokens(prompt_text)
    completion_tokens = count_tokens(completion_text)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def split_into_pieces(text: str) -> list[str]:
    """Split text into words that keep their trailing whitespace.

    Joining the pieces gives back the original text. Python strings index by
    code point, so no piece splits a character, including ones beyond the BMP.
    """
    pieces = [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]
    return pieces or [""]


# ---------------------------------------------------------------------------
# Response bodies
# ---------------------------------------------------------------------------


def error_body(message: str, code: str, error_type: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def completion_object(completion_id: str, model: str, reply: Reply, usage: dict[str, int]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_call is not None:
        message["tool_calls"] = [
            {
                "id": reply.tool_call.call_id,
                "type": "function",
                "function": {"name": reply.tool_call.name, "arguments": reply.tool_call.arguments},
            }
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}],
        "usage": usage,
    }


def stream_chunks(completion_id: str, model: str, reply: Reply) -> Iterator[dict[str, Any]]:
    """Yield the ``chat.completion.chunk`` objects of a streamed reply, without usage."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    if reply.tool_call is None:
        yield chunk({"role": "assistant", "content": ""})
        for piece in split_into_pieces(reply.text or ""):
            yield chunk({"content": piece})
    else:
        call = reply.tool_call
        yield chunk({"role": "assistant", "content": None})
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
        )
        # The arguments arrive in two pieces, so callers must concatenate them.
        middle = len(call.arguments) // 2
        for part in (call.arguments[:middle], call.arguments[middle:]):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
    yield chunk({}, reply.finish_reason)


# ---------------------------------------------------------------------------
# HTTP server
# ---------------------------------------------------------------------------


class BadRequest(Exception):
    """A request body that cannot be read, with the HTTP status and error code to send."""

    def __init__(self, status: HTTPStatus, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class StandInGatewayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        key: str | None,
        log_path: Path | None,
        delay_ms: int,
        model_reply: str | None,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, StandInGatewayHandler)
        self.key = key
        self.log_path = log_path
        self.delay_seconds = delay_ms / 1000.0
        self.model_reply = model_reply
        self.log_lock = threading.Lock()

    def write_request_log(self, record: dict[str, Any]) -> None:
        if self.log_path is None:
            return
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.log_lock, open(self.log_path, "a", encoding="utf-8") as log_file:
            log_file.write(line)
            log_file.flush()


class StandInGatewayHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 lets a client such as the openai SDK reuse one connection for
    # many requests. Every response therefore carries either Content-Length
    # or chunked transfer encoding.
    protocol_version = "HTTP/1.1"
    server: StandInGatewayServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    # --- routing ---

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.send_text(HTTPStatus.OK, "ok")
        elif path == "/v1/models":
            self.drain_body()
            if not self.authorization_ok():
                self.send_invalid_key()
                return
            model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "smooth-nb"}
            self.send_json(HTTPStatus.OK, {"object": "list", "data": [model]})
        elif path == "/v1/chat/completions":
            self.send_method_not_allowed("POST")
        else:
            self.send_not_found(path)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/v1/chat/completions":
            self.handle_chat_completion(path)
        elif path in ("/health", "/v1/models"):
            self.drain_body()
            self.send_method_not_allowed("GET")
        else:
            self.drain_body()
            self.send_not_found(path)

    # --- chat completions ---

    def handle_chat_completion(self, path: str) -> None:
        authorization_ok = self.authorization_ok()
        try:
            raw_body = self.read_body()
        except BadRequest as error:
            logger.warning("rejected chat request from %s: %s", self.address_string(), error)
            self.server.write_request_log({"path": path, "authorization_ok": authorization_ok, "body": None})
            self.send_json(error.status, error_body(str(error), error.code))
            self.close_connection = True
            return

        body: Any = None
        parse_error = None
        try:
            body = json.loads(raw_body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            parse_error = f"Request body is not valid JSON: {error}"
        self.server.write_request_log({"path": path, "authorization_ok": authorization_ok, "body": body})

        if not authorization_ok:
            self.send_invalid_key()
            return
        if parse_error is not None:
            logger.warning("rejected chat request from %s: %s", self.address_string(), parse_error)
            self.send_json(HTTPStatus.BAD_REQUEST, error_body(parse_error, "invalid_json"))
            return
        problem = self.validate_chat_body(body)
        if problem is not None:
            logger.warning("rejected chat request from %s: %s", self.address_string(), problem)
            self.send_json(HTTPStatus.BAD_REQUEST, error_body(problem, "invalid_request"))
            return

        reply = decide_reply(body, self.server.model_reply)
        usage = usage_for(body, reply)
        model = body.get("model") if isinstance(body.get("model"), str) else MODEL_ID
        completion_id = f"chatcmpl-standin-{next(_call_counter)}"

        if body.get("stream") is True:
            stream_options = body.get("stream_options")
            include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
            self.send_stream(completion_id, model, reply, usage if include_usage else None)
        else:
            self.send_json(HTTPStatus.OK, completion_object(completion_id, model, reply, usage))

    @staticmethod
    def validate_chat_body(body: Any) -> str | None:
        """Return why a parsed body is not a usable chat request, or None."""
        if not isinstance(body, dict):
            return "Request body must be a JSON object."
        messages = body.get("messages")
        if messages is None:
            return "Missing required field 'messages'."
        if not isinstance(messages, list) or not messages:
            return "Field 'messages' must be a non-empty array of message objects."
        if not all(isinstance(message, dict) for message in messages):
            return "Every entry in 'messages' must be a JSON object."
        return None

    def send_stream(
        self, completion_id: str, model: str, reply: Reply, usage: dict[str, int] | None
    ) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        events: list[dict[str, Any]] = list(stream_chunks(completion_id, model, reply))
        if usage is not None:
            events.append(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": events[-1]["created"],
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        try:
            for index, event in enumerate(events):
                if index > 0 and self.server.delay_seconds > 0:
                    time.sleep(self.server.delay_seconds)
                self.write_chunk(f"data: {json.dumps(event, ensure_ascii=False)}\n\n")
            self.write_chunk("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError) as error:
            logger.info("client %s closed the stream %s early: %s", self.address_string(), completion_id, error)
            self.close_connection = True

    def write_chunk(self, text: str) -> None:
        """Write one chunk of a chunked-encoding response and flush it."""
        data = text.encode("utf-8")
        self.wfile.write(f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n")
        self.wfile.flush()

    # --- request helpers ---

    def authorization_ok(self) -> bool:
        if self.server.key is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode("utf-8"), self.server.key.encode("utf-8"))

    def read_body(self) -> bytes:
        """Read the request body given by Content-Length or chunked encoding."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked_body()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"Invalid Content-Length {length_header!r}.", "invalid_request")
        if length < 0:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"Invalid Content-Length {length_header!r}.", "invalid_request")
        if length > MAX_BODY_BYTES:
            raise BadRequest(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"Request body of {length} bytes exceeds the limit of {MAX_BODY_BYTES} bytes.",
                "request_too_large",
            )
        return self.rfile.read(length)

    def read_chunked_body(self) -> bytes:
        data = bytearray()
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise BadRequest(HTTPStatus.BAD_REQUEST, f"Invalid chunk size {size_line!r}.", "invalid_request")
            if size == 0:
                # Skip optional trailer headers up to the blank line.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(data)
            if len(data) + size > MAX_BODY_BYTES:
                raise BadRequest(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"Request body exceeds the limit of {MAX_BODY_BYTES} bytes.",
                    "request_too_large",
                )
            data += self.rfile.read(size)
            self.rfile.readline(1024)

    def drain_body(self) -> None:
        """Read and discard a body so the kept-alive connection stays in sync."""
        try:
            self.read_body()
        except BadRequest:
            self.close_connection = True

    # --- response helpers ---

    def send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def send_text(self, status: HTTPStatus, text: str) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def send_invalid_key(self) -> None:
        logger.warning("rejected request to %s from %s: invalid or missing API key", self.path, self.address_string())
        self.send_json(
            HTTPStatus.UNAUTHORIZED,
            error_body("Invalid or missing API key. Send 'Authorization: Bearer KEY'.", "invalid_api_key"),
        )

    def send_not_found(self, path: str) -> None:
        self.send_json(HTTPStatus.NOT_FOUND, error_body(f"No endpoint at path {path!r}.", "not_found"))

    def send_method_not_allowed(self, allowed: str) -> None:
        self.send_json(
            HTTPStatus.METHOD_NOT_ALLOWED,
            error_body(f"Method {self.command} is not allowed on {self.path}. Use {allowed}.", "method_not_allowed"),
        )

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # BaseHTTPRequestHandler calls this for malformed request lines and
        # headers. Send the same JSON error shape as every other response.
        logger.warning("rejected request from %s with status %s: %s", self.address_string(), code, message)
        self.close_connection = True
        try:
            self.send_json(HTTPStatus(code), error_body(message or HTTPStatus(code).phrase, "invalid_request"))
        except OSError:
            pass


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Serve a stand-in OpenAI-compatible chat API for tests. It is not a model: replies follow fixed rules."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port to bind, or 0 to let the OS pick a free port (default: 0)")
    parser.add_argument("--key", default=None, help="API key that requests must send as 'Authorization: Bearer KEY'")
    parser.add_argument("--log", type=Path, default=None, help="file to append one JSON line per chat request to")
    parser.add_argument(
        "--delay-ms", type=int, default=0, help="milliseconds to sleep between streamed events (default: 0)"
    )
    parser.add_argument("--model-reply", default=None, help="fixed text to reply with instead of the knowledge-base rule")
    args = parser.parse_args(argv)
    if args.delay_ms < 0:
        parser.error(f"--delay-ms must be 0 or more, got {args.delay_ms}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="stand-in gateway: %(levelname)s %(message)s", stream=sys.stderr)

    try:
        server = StandInGatewayServer(
            (args.host, args.port),
            key=args.key,
            log_path=args.log,
            delay_ms=args.delay_ms,
            model_reply=args.model_reply,
        )
    except OSError as error:
        logger.error("binding %s:%s failed: %s", args.host, args.port, error)
        return 1

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    port = server.server_address[1]
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"listening on http://{url_host}:{port}/v1", flush=True)
    logger.info("serving on %s:%s", args.host, port)
    try:
        server.serve_forever()
    except SystemExit:
        pass
    finally:
        server.server_close()
        logger.info("stopped")
    return 0


# ---------------------------------------------------------------------------
# Test helper
# ---------------------------------------------------------------------------

STARTUP_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 5.0


@dataclass
class GatewayProcess:
    """A running stand-in gateway child process, as yielded by ``run_stand_in_gateway``."""

    process: subprocess.Popen[str]
    base_url: str
    port: int
    log_path: Path | None
    stderr_path: Path = field(repr=False)

    def requests(self) -> list[dict[str, Any]]:
        """Return the logged chat requests, oldest first.

        Raises:
            RuntimeError: the gateway was started without a log path.
        """
        if self.log_path is None:
            raise RuntimeError("The stand-in gateway has no request log. Pass log_path to run_stand_in_gateway().")
        if not self.log_path.exists():
            return []
        with open(self.log_path, encoding="utf-8") as log_file:
            return [json.loads(line) for line in log_file if line.strip()]

    def stderr(self) -> str:
        """Return what the gateway has written to stderr so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


def _read_first_line(stream: Any, timeout: float) -> str | None:
    """Read one line from a pipe, or return None when the timeout passes first."""
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True)
    reader.start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return None


def _stop_process(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


@contextlib.contextmanager
def run_stand_in_gateway(
    *,
    key: str | None = None,
    log_path: str | os.PathLike[str] | None = None,
    delay_ms: int = 0,
    model_reply: str | None = None,
) -> Iterator[GatewayProcess]:
    """Start the stand-in gateway on 127.0.0.1 with an ephemeral port.

    Args:
        key: API key the gateway requires, or None to accept any request.
            The key is passed on the command line, so other local users can
            see it in the process list. Use only test keys.
        log_path: file where the gateway appends one JSON line per chat request.
        delay_ms: milliseconds the gateway sleeps between streamed events.
        model_reply: fixed reply text, replacing the knowledge-base rule.

    Yields:
        The running gateway. On exit the process gets SIGTERM and, if it is
        still running after 5 seconds, SIGKILL.

    Raises:
        RuntimeError: the gateway exited or printed no ``listening on`` line
            within 15 seconds. The message includes its stderr.
    """
    command = [sys.executable, str(Path(__file__).resolve()), "--host", "127.0.0.1", "--port", "0"]
    if key is not None:
        command += ["--key", key]
    if log_path is not None:
        command += ["--log", str(log_path)]
    if delay_ms:
        command += ["--delay-ms", str(delay_ms)]
    if model_reply is not None:
        command += ["--model-reply", model_reply]

    with tempfile.TemporaryDirectory(prefix="stand-in-gateway-") as temp_dir:
        stderr_path = Path(temp_dir) / "stderr.txt"
        # stderr goes to a file, not a pipe, so a long run whose stderr is never
        # read cannot fill the pipe buffer and block the gateway.
        with open(stderr_path, "w", encoding="utf-8") as stderr_file:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr_file, text=True, encoding="utf-8"
            )
        try:
            line = _read_first_line(process.stdout, STARTUP_TIMEOUT_SECONDS)
            match = re.fullmatch(r"listening on (http://[^\s]+:(\d+)/v1)", (line or "").strip())
            if match is None:
                _stop_process(process)
                stderr_text = stderr_path.read_text(encoding="utf-8", errors="replace")
                reason = "printed no 'listening on' line" if not line else f"printed {line.strip()!r}"
                raise RuntimeError(
                    f"The stand-in gateway {reason} within {STARTUP_TIMEOUT_SECONDS:.0f} s "
                    f"(exit code {process.returncode}). Its stderr:\n{stderr_text}"
                )
            yield GatewayProcess(
                process=process,
                base_url=match.group(1),
                port=int(match.group(2)),
                log_path=Path(log_path) if log_path is not None else None,
                stderr_path=stderr_path,
            )
        finally:
            _stop_process(process)


if __name__ == "__main__":
    sys.exit(main())
