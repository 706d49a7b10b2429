"""Tests for the stand-in LLM gateway, run as a real process with the openai SDK as the client."""

from __future__ import annotations

import http.client
import json
import signal
import sys
import time
from pathlib import Path
from typing import Iterator

import openai
import pytest

from tests.support.stand_in_gateway import GatewayProcess, run_stand_in_gateway

TEST_KEY = "sk-stand-in-test-key-4821"

RETURNS_SOURCE = "policies/returns.md"
RETURNS_CONTENT = "SmooAI's return window is exactly 17 days from delivery. Returns after 17 days are not accepted."
SHIPPING_SOURCE = "policies/shipping.md"
SHIPPING_CONTENT = "Orders ship within 2 business days from the Lisbon warehouse."

SYSTEM_PROMPT = (
    "You are the SmooAI support assistant.\n"
    "\n"
    "Knowledge base (2 passages):\n"
    f"[{SHIPPING_SOURCE}] {SHIPPING_CONTENT}\n"
    f"[{RETURNS_SOURCE}] {RETURNS_CONTENT}\n"
)
RETURNS_QUESTION = "How many days is the return window after delivery?"
EXPECTED_RETURNS_ANSWER = f"{RETURNS_CONTENT} (source: {RETURNS_SOURCE})"

ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


@pytest.fixture
def gateway() -> Iterator[GatewayProcess]:
    with run_stand_in_gateway(key=TEST_KEY) as running:
        yield running


def make_client(gateway: GatewayProcess, key: str = TEST_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=10.0)


def knowledge_messages(question: str = RETURNS_QUESTION) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def post_raw(gateway: GatewayProcess, path: str, body: bytes, key: str = TEST_KEY) -> tuple[int, dict]:
    """Send a POST without the SDK, so the body can be anything."""
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def get_raw(gateway: GatewayProcess, path: str, key: str = TEST_KEY) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# ---------------------------------------------------------------------------
# Startup and shutdown
# ---------------------------------------------------------------------------


def test_helper_reports_loopback_base_url(gateway: GatewayProcess) -> None:
    assert gateway.port > 0
    assert gateway.base_url == f"http://127.0.0.1:{gateway.port}/v1"


def test_sigterm_exits_with_code_zero() -> None:
    with run_stand_in_gateway() as running:
        running.process.send_signal(signal.SIGTERM)
        exit_code = running.process.wait(timeout=5)
        stderr_text = running.stderr()

    assert exit_code == 0, stderr_text
    assert "stopped" in stderr_text


def test_helper_raises_when_gateway_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    # /bin/false ignores the script path and exits 1 without printing anything.
    monkeypatch.setattr(sys, "executable", "/bin/false")

    with pytest.raises(RuntimeError) as raised:
        with run_stand_in_gateway():
            pass

    assert "printed no 'listening on' line" in str(raised.value)
    assert "exit code 1" in str(raised.value)


# ---------------------------------------------------------------------------
# Knowledge-grounded replies
# ---------------------------------------------------------------------------


def test_stream_reassembles_grounded_answer(gateway: GatewayProcess) -> None:
    stream = make_client(gateway).chat.completions.create(
        model="test-model",
        messages=knowledge_messages(),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    content_pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    answer = "".join(content_pieces)
    finish_reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage_chunks = [c for c in chunks if c.usage is not None]

    assert answer == EXPECTED_RETURNS_ANSWER
    assert answer.endswith(f"(source: {RETURNS_SOURCE})")
    assert SHIPPING_CONTENT not in answer
    assert len(content_pieces) > 1, "the reply should arrive in several pieces"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert finish_reasons == ["stop"]
    assert len(usage_chunks) == 1
    assert usage_chunks[0].choices == []
    assert usage_chunks[0].usage.completion_tokens == len(EXPECTED_RETURNS_ANSWER.split())
    assert usage_chunks[0].usage.total_tokens == (
        usage_chunks[0].usage.prompt_tokens + usage_chunks[0].usage.completion_tokens
    )


def test_stream_without_usage_option_omits_usage(gateway: GatewayProcess) -> None:
    stream = make_client(gateway).chat.completions.create(
        model="test-model", messages=knowledge_messages(), stream=True
    )
    chunks = list(stream)

    assert all(c.usage is None for c in chunks)
    assert all(len(c.choices) == 1 for c in chunks)


def test_non_streamed_answer_picks_overlapping_passage(gateway: GatewayProcess) -> None:
    completion = make_client(gateway).chat.completions.create(
        model="test-model", messages=knowledge_messages("When do orders ship from the warehouse?")
    )

    assert completion.object == "chat.completion"
    assert completion.model == "test-model"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == f"{SHIPPING_CONTENT} (source: {SHIPPING_SOURCE})"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == len((SYSTEM_PROMPT + "\n" + "When do orders ship from the warehouse?").split())
    assert completion.usage.completion_tokens > 0


def test_missing_knowledge_base_replies_unknown(gateway: GatewayProcess) -> None:
    completion = make_client(gateway).chat.completions.create(
        model="test-model",
        messages=[{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Return window?"}],
    )

    assert completion.choices[0].message.content == "I don't know; no knowledge base passage was provided."


def test_content_parts_are_read_as_text(gateway: GatewayProcess) -> None:
    completion = make_client(gateway).chat.completions.create(
        model="test-model",
        messages=[
            {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
            {"role": "user", "content": [{"type": "text", "text": RETURNS_QUESTION}]},
        ],
    )

    assert completion.choices[0].message.content == EXPECTED_RETURNS_ANSWER


# ---------------------------------------------------------------------------
# Fixed replies and streaming
# ---------------------------------------------------------------------------


def test_stream_round_trips_emoji_beyond_bmp() -> None:
    reply = "Grüße 👋🏽 from the 🦜 gateway — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ok"
    with run_stand_in_gateway(model_reply=reply) as running:
        stream = make_client(running, key="any").chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        answer = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert answer == reply


def test_model_reply_overrides_knowledge_base() -> None:
    with run_stand_in_gateway(model_reply="Fixed reply.") as running:
        completion = make_client(running, key="any").chat.completions.create(
            model="test-model", messages=knowledge_messages()
        )

    assert completion.choices[0].message.content == "Fixed reply."


def test_delay_spaces_out_streamed_pieces() -> None:
    delay_ms = 100
    with run_stand_in_gateway(delay_ms=delay_ms, model_reply="one two three four") as running:
        stream = make_client(running, key="any").chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        arrival_times = [time.monotonic() for c in stream if c.choices and c.choices[0].delta.content]

    # Four pieces with a delay before each of the last three: at least 3 delays.
    assert len(arrival_times) == 4
    assert arrival_times[-1] - arrival_times[0] >= 3 * delay_ms / 1000 * 0.9


# ---------------------------------------------------------------------------
# Tool calls
# ---------------------------------------------------------------------------


def test_tool_call_round_trip(gateway: GatewayProcess) -> None:
    client = make_client(gateway)
    messages: list[dict] = [{"role": "user", "content": 'Please call tool add with {"a": 2, "b": 3}'}]

    first = client.chat.completions.create(model="test-model", messages=messages, tools=[ADD_TOOL])
    tool_calls = first.choices[0].message.tool_calls

    assert first.choices[0].finish_reason == "tool_calls"
    assert tool_calls is not None
    assert len(tool_calls) == 1
    assert tool_calls[0].type == "function"
    assert tool_calls[0].function.name == "add"
    assert json.loads(tool_calls[0].function.arguments) == {"a": 2, "b": 3}

    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": tool_calls[0].id, "content": "5"})
    second = client.chat.completions.create(model="test-model", messages=messages, tools=[ADD_TOOL])

    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content == "Tool add returned: 5"


def test_streamed_tool_call_splits_arguments(gateway: GatewayProcess) -> None:
    stream = make_client(gateway).chat.completions.create(
        model="test-model",
        messages=[{"role": "user", "content": 'call tool add with {"a": 40, "b": 2}'}],
        tools=[ADD_TOOL],
        stream=True,
    )
    deltas = [tc for c in list(stream) if c.choices for tc in (c.choices[0].delta.tool_calls or [])]

    names = [d.function.name for d in deltas if d.function and d.function.name]
    argument_pieces = [d.function.arguments for d in deltas if d.function and d.function.arguments]

    assert names == ["add"]
    assert deltas[0].id is not None
    assert all(d.index == 0 for d in deltas)
    assert len(argument_pieces) == 2
    assert json.loads("".join(argument_pieces)) == {"a": 40, "b": 2}


def test_tool_call_without_arguments_sends_empty_object(gateway: GatewayProcess) -> None:
    completion = make_client(gateway).chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "call tool add"}], tools=[ADD_TOOL]
    )

    assert completion.choices[0].message.tool_calls[0].function.arguments == "{}"


def test_unknown_tool_name_gets_text_reply(gateway: GatewayProcess) -> None:
    completion = make_client(gateway).chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "call tool multiply"}], tools=[ADD_TOOL]
    )

    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_wrong_key_raises_authentication_error(gateway: GatewayProcess) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        make_client(gateway, key="wrong-key").chat.completions.create(
            model="test-model", messages=knowledge_messages()
        )

    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"


def test_invalid_json_returns_400(gateway: GatewayProcess) -> None:
    status, body = post_raw(gateway, "/v1/chat/completions", b'{"messages": [')

    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in body["error"]["message"]


def test_missing_messages_returns_400(gateway: GatewayProcess) -> None:
    status, body = post_raw(gateway, "/v1/chat/completions", b'{"model": "test-model"}')

    assert status == 400
    assert "messages" in body["error"]["message"]


def test_unknown_path_returns_404(gateway: GatewayProcess) -> None:
    status, body = post_raw(gateway, "/v1/embeddings", b"{}")

    assert status == 404
    assert body["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xff\xfe not utf-8", id="not-utf8"),
        pytest.param(b"[" * 100_000, id="deeply-nested"),
        pytest.param(b"[]", id="array-body"),
        pytest.param(b'{"messages": "not a list"}', id="messages-not-list"),
        pytest.param(b'{"messages": []}', id="messages-empty"),
        pytest.param(b'{"messages": [7]}', id="message-not-object"),
    ],
)
def test_malformed_body_returns_400(gateway: GatewayProcess, body: bytes) -> None:
    status, error = post_raw(gateway, "/v1/chat/completions", body)
    health_status, _ = get_raw(gateway, "/health")

    assert status == 400
    assert error["error"]["type"] == "invalid_request_error"
    assert gateway.process.poll() is None, gateway.stderr()
    assert health_status == 200


def test_odd_field_types_still_get_reply(gateway: GatewayProcess) -> None:
    body = b'{"messages": [{"role": "user", "content": 5}], "tools": 7, "stream_options": 3, "model": 9}'
    status, completion = post_raw(gateway, "/v1/chat/completions", body)

    assert status == 200
    assert completion["model"] == "stand-in"
    assert completion["choices"][0]["message"]["content"].startswith("I don't know")


# ---------------------------------------------------------------------------
# Other endpoints
# ---------------------------------------------------------------------------


def test_models_lists_stand_in(gateway: GatewayProcess) -> None:
    models = make_client(gateway).models.list()

    assert [model.id for model in models.data] == ["stand-in"]


def test_health_returns_ok(gateway: GatewayProcess) -> None:
    status, body = get_raw(gateway, "/health", key="")

    assert status == 200
    assert body == b"ok"


# ---------------------------------------------------------------------------
# Request log
# ---------------------------------------------------------------------------


def test_log_records_requests_without_key(tmp_path: Path) -> None:
    log_path = tmp_path / "requests.jsonl"
    with run_stand_in_gateway(key=TEST_KEY, log_path=log_path) as running:
        make_client(running).chat.completions.create(model="test-model", messages=knowledge_messages())
        with pytest.raises(openai.AuthenticationError):
            make_client(running, key="wrong-key").chat.completions.create(
                model="test-model", messages=knowledge_messages()
            )
        records = running.requests()

    assert len(records) == 2
    assert records[0]["path"] == "/v1/chat/completions"
    assert records[0]["authorization_ok"] is True
    assert records[1]["authorization_ok"] is False
    assert records[0]["body"]["messages"][0]["content"] == SYSTEM_PROMPT
    assert records[0]["body"]["model"] == "test-model"
    assert TEST_KEY not in log_path.read_text(encoding="utf-8")
    assert "wrong-key" not in log_path.read_text(encoding="utf-8")
