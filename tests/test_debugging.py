"""The notebook debugging API, exercised in a real Jupyter kernel.

Each test runs cells in an ipykernel process through jupyter_client, against a
server started with ``%smooth_local start --seed-kb --mock-reply ...``. Turns
run on the scripted mock model (``srv.mock``) or on the fixed ``--mock-reply``
text, so every result is deterministic and no test needs a network.

Most tests share one module-scoped kernel. Before each test the fixture clears
the kernel's namespace and starts a fresh server, so tools, knowledge and the
mock queue never leak from one test to the next. The ``send_sync`` test needs a
kernel in which nest-asyncio was never applied, and the notebook test runs its
own kernel through nbclient.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nbformat
import pytest
import websockets.sync.client
from jupyter_client.blocking.client import BlockingKernelClient
from nbclient import NotebookClient

from smooth_nb.server.knowledge import DEMO_DOCUMENTS

from tests.support.cli import serve
from tests.support.kernel import (
    CELL_TIMEOUT,
    GATEWAY_PREFIX,
    KERNEL_NAME,
    KERNEL_START_TIMEOUT,
    SOCKET_TIMEOUT,
    evaluate,
    kernel_env,
    plain_text,
    receive_reply,
    run_cell,
    run_checked,
    running_kernel,
    start_server,
)
from tests.support.scenarios import run_scenario

DEBUGGING_NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "debugging.ipynb"

FALLBACK_REPLY = "I am the fallback reply."
RETURNS_QUESTION = "How long do I have to return an order?"
RETURNS_SOURCE = "policies/returns.md"
RETURNS_PASSAGE = DEMO_DOCUMENTS[RETURNS_SOURCE]
AGENT_ID = "5d0c7a52-8f3e-4b1a-9c6d-2e4f8a1b3c70"

# A tool with a Google-style docstring, as a notebook user would write it.
ORDER_STATUS_TOOL = '''
@srv.tool
def order_status(order_id: str) -> dict:
    """Look up where an order is.

    Args:
        order_id: The order number, like A-1001.
    """
    return {"order": order_id, "status": "shipped"}
'''

# A tool that needs a human confirmation. The ``ran`` list records each call that was let through.
CANCEL_ORDER_TOOL = '''
ran = []

@srv.tool(confirm=True)
def cancel_order(order_id: str) -> str:
    """Cancel an order that has not shipped yet."""
    ran.append(order_id)
    return f"order {order_id} cancelled"
'''


def cell(code: str) -> str:
    """Return ``code`` without its common indentation, so cells can be written indented in a test."""
    return textwrap.dedent(code).strip()


def receive_event(connection: Any, event_type: str) -> dict[str, Any]:
    """Read frames until one of ``event_type`` arrives, and return it."""
    while True:
        frame = json.loads(connection.recv(timeout=SOCKET_TIMEOUT))
        if frame.get("type") == event_type:
            return frame


def code_cell_with(notebook: Any, marker: str) -> Any:
    """Return the one code cell whose source contains ``marker``."""
    found = [c for c in notebook.cells if c.cell_type == "code" and marker in c.source]
    assert len(found) == 1, f"expected one code cell containing {marker!r}, found {len(found)}"
    return found[0]


def cell_stdout(notebook_cell: Any) -> str:
    return "".join(output.get("text", "") for output in notebook_cell.outputs if output.output_type == "stream")


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_kernel() -> Iterator[BlockingKernelClient]:
    with running_kernel(kernel_env()) as (_manager, client):
        leaked = evaluate(client, f"import os\nsorted(n for n in os.environ if n.startswith({GATEWAY_PREFIX!r}))")
        assert leaked == [], f"the kernel was started with gateway variables: {leaked}"
        yield client


@pytest.fixture
def kernel(shared_kernel: BlockingKernelClient) -> Iterator[BlockingKernelClient]:
    """The shared kernel with an empty namespace and ``srv``, a fresh server on the mock model."""
    run_cell(shared_kernel, "%load_ext smooth_nb\n%smooth_local stop\n%reset -f")
    start_server(shared_kernel, f"--seed-kb --mock-reply {FALLBACK_REPLY!r}")
    yield shared_kernel
    run_cell(shared_kernel, "%smooth_local stop")


# ---------------------------------------------------------------------------
# A turn, inspected
# ---------------------------------------------------------------------------


def test_send_returns_complete_turn(kernel: BlockingKernelClient) -> None:
    run_checked(kernel, f"turn = await srv.session().send({RETURNS_QUESTION!r})")

    assert evaluate(kernel, "turn.status") == "done", f"the turn did not finish: {evaluate(kernel, 'turn.error')}"
    assert evaluate(kernel, "turn.text") == FALLBACK_REPLY, "the turn's text is not the --mock-reply answer"

    times = evaluate(kernel, "[event.at for event in turn.events]")
    types = evaluate(kernel, "[event.type for event in turn.events]")
    assert times, "the turn has no events"
    assert all(at >= 0 for at in times), f"an event has a negative time: {times}"
    assert times == sorted(times), f"event times are not in increasing order: {list(zip(types, times))}"
    assert types[-1] == "eventual_response", f"the last event is not eventual_response: {types}"

    assert evaluate(kernel, "turn.usage is not None") is True, "the turn has no usage"
    usage = evaluate(kernel, "turn.usage")
    assert usage.get("promptTokens", 0) > 0, f"usage has no prompt tokens: {usage}"
    assert usage.get("completionTokens", 0) > 0, f"usage has no completion tokens: {usage}"

    ttft, duration = evaluate(kernel, "(turn.ttft, turn.duration)")
    assert ttft is not None, "the turn has no time to first token"
    assert duration is not None, "the finished turn has no duration"
    assert ttft <= duration, f"the first token ({ttft} s) came after the end of the turn ({duration} s)"

    cited = evaluate(kernel, "[(c['id'], c['score']) for c in turn.citations]")
    assert cited, "the turn about returns has no citations"
    assert cited[0][0] == RETURNS_SOURCE, f"the first citation is not {RETURNS_SOURCE}: {cited}"
    assert cited[0][1] > 0, f"the returns citation has no positive score: {cited}"


def test_llm_requests_show_prompt_and_tools(kernel: BlockingKernelClient) -> None:
    run_checked(kernel, ORDER_STATUS_TOOL)
    run_checked(
        kernel,
        cell(
            f"""
            turn = await srv.session().send({RETURNS_QUESTION!r})
            first_call = turn.llm_requests[0]
            """
        ),
    )

    assert evaluate(kernel, "len(turn.llm_requests)") == 1, "a turn without tool calls made more than one model call"

    system = evaluate(kernel, "first_call.messages[0]")
    assert system["role"] == "system", f"the first message is not the system prompt: {system}"
    assert RETURNS_PASSAGE in system["content"], f"the system prompt lacks the returns passage: {system['content']!r}"
    last = evaluate(kernel, "first_call.messages[-1]")
    assert last == {"role": "user", "content": RETURNS_QUESTION}, f"the last message is not the user's: {last}"

    offered = evaluate(kernel, "{spec['function']['name']: spec['function'] for spec in first_call.tools}")
    assert "order_status" in offered, f"the cell's tool was not offered; offered: {sorted(offered)}"
    registered = evaluate(kernel, "srv.tools['order_status'].parameters")
    assert offered["order_status"]["parameters"] == registered, (
        f"the offered schema {offered['order_status']['parameters']} differs from the registered one {registered}"
    )
    assert offered["order_status"]["description"] == "Look up where an order is.", (
        f"the offered description is not the docstring's summary: {offered['order_status']['description']!r}"
    )

    assert evaluate(kernel, "first_call.text") == evaluate(kernel, "turn.text"), "the model call's text is not the turn's answer"


# ---------------------------------------------------------------------------
# Tools defined in cells
# ---------------------------------------------------------------------------


def test_tool_schema_from_hints_docstring(kernel: BlockingKernelClient) -> None:
    run_checked(
        kernel,
        cell(
            '''
            @srv.tool
            def order_status(order_id: str, parcels: int = 1, verbose: bool = False, weight: float | None = None) -> dict:
                """Look up where an order is.

                Args:
                    order_id: The order number, like A-1001.
                    parcels (int): How many parcels to list,
                        newest first.
                    verbose: Include the carrier's tracking events.
                """
                return {"order": order_id}
            '''
        ),
    )

    description = evaluate(kernel, "srv.tools['order_status'].description")
    schema = evaluate(kernel, "srv.tools['order_status'].parameters")
    properties = schema["properties"]

    assert description == "Look up where an order is.", f"the description is not the docstring's summary: {description!r}"
    assert schema["type"] == "object", f"the parameters are not an object schema: {schema}"
    assert schema.get("required") == ["order_id"], f"only order_id has no default, yet required is {schema.get('required')}"
    assert properties["order_id"] == {"type": "string", "description": "The order number, like A-1001."}, (
        f"order_id's schema is wrong: {properties['order_id']}"
    )
    assert properties["parcels"] == {"type": "integer", "description": "How many parcels to list, newest first.", "default": 1}, (
        f"parcels' schema is wrong (a typed entry continued on the next line): {properties['parcels']}"
    )
    assert properties["verbose"] == {"type": "boolean", "description": "Include the carrier's tracking events.", "default": False}, (
        f"verbose's schema is wrong: {properties['verbose']}"
    )
    assert properties["weight"] == {"type": "number", "default": None}, f"weight's schema is wrong: {properties['weight']}"


def test_scripted_turn_calls_cell_tool(kernel: BlockingKernelClient) -> None:
    run_checked(kernel, ORDER_STATUS_TOOL)
    run_checked(
        kernel,
        cell(
            """
            srv.mock.tool_call("order_status", {"order_id": "A-1001"}).reply("Order A-1001 has shipped.")
            turn = await srv.session().send("Where is order A-1001?")
            call = turn.tool_calls[0]
            """
        ),
    )

    assert evaluate(kernel, "turn.status") == "done", f"the tool turn did not finish: {evaluate(kernel, 'turn.error')}"
    assert evaluate(kernel, "len(turn.tool_calls)") == 1, "the scripted turn did not make exactly one tool call"
    assert evaluate(kernel, "call.name") == "order_status", "the tool call has the wrong name"
    assert evaluate(kernel, "call.arguments") == {"order_id": "A-1001"}, "the tool call has the wrong arguments"
    result = evaluate(kernel, "call.result")
    assert json.loads(result) == {"order": "A-1001", "status": "shipped"}, f"the result is not the function's return value: {result!r}"
    assert evaluate(kernel, "call.is_error") is False, "a tool that returned normally is marked as an error"
    duration = evaluate(kernel, "call.duration")
    assert duration is not None, "the finished tool call has no duration"
    assert duration >= 0, f"the tool call has a negative duration: {duration}"
    assert evaluate(kernel, "turn.text") == "Order A-1001 has shipped.", "the turn's text is not the scripted reply"


def test_redefined_tool_replaces_result(kernel: BlockingKernelClient) -> None:
    run_checked(kernel, ORDER_STATUS_TOOL)
    run_checked(
        kernel,
        cell(
            """
            srv.mock.tool_call("order_status", {"order_id": "A-1001"}).reply("Shipped.")
            before = await srv.session().send("Where is order A-1001?")
            """
        ),
    )
    run_checked(
        kernel,
        cell(
            '''
            @srv.tool
            def order_status(order_id: str) -> dict:
                """Look up where an order is."""
                return {"order": order_id, "status": "delivered"}

            srv.mock.tool_call("order_status", {"order_id": "A-1001"}).reply("Delivered.")
            after = await srv.session().send("Where is order A-1001 now?")
            '''
        ),
    )

    before = json.loads(evaluate(kernel, "before.tool_calls[0].result"))
    after = json.loads(evaluate(kernel, "after.tool_calls[0].result"))
    assert before["status"] == "shipped", f"the first definition's result is wrong: {before}"
    assert after["status"] == "delivered", f"the turn after redefining the tool still ran the old body: {after}"
    assert evaluate(kernel, "sorted(srv.tools)") == ["order_status"], "redefining the tool added a second tool"


def test_async_tool_result_reaches_model(kernel: BlockingKernelClient) -> None:
    run_checked(
        kernel,
        cell(
            '''
            import asyncio

            @srv.tool
            async def stock_level(sku: str) -> str:
                """Count the stock of a product."""
                await asyncio.sleep(0.01)
                return f"{sku}: 12 in stock"

            srv.mock.tool_call("stock_level", {"sku": "MUG-1"}).reply("There are 12 mugs left.")
            turn = await srv.session().send("How many mugs are left?")
            '''
        ),
    )

    assert evaluate(kernel, "turn.status") == "done", f"the async tool turn did not finish: {evaluate(kernel, 'turn.error')}"
    assert evaluate(kernel, "turn.tool_calls[0].result") == "MUG-1: 12 in stock", "the async tool's result is not its return value"
    assert evaluate(kernel, "turn.tool_calls[0].is_error") is False, "the async tool call is marked as an error"
    tool_messages = evaluate(kernel, "[m['content'] for m in turn.llm_requests[1].messages if m['role'] == 'tool']")
    assert tool_messages == ["MUG-1: 12 in stock"], f"the model did not see the awaited result: {tool_messages}"


def test_raising_tool_keeps_turn_alive(kernel: BlockingKernelClient) -> None:
    run_checked(
        kernel,
        cell(
            '''
            @srv.tool
            def flaky_inventory(sku: str) -> int:
                """Count the stock of a product."""
                raise RuntimeError(f"inventory service is down for {sku}")

            srv.mock.tool_call("flaky_inventory", {"sku": "MUG-1"}).reply("Sorry, I cannot check the stock right now.")
            turn = await srv.session().send("How many mugs are left?")
            '''
        ),
    )
    error_text = "inventory service is down for MUG-1"

    assert evaluate(kernel, "turn.status") == "done", f"a raising tool ended the turn: {evaluate(kernel, 'turn.error')}"
    assert evaluate(kernel, "turn.text") == "Sorry, I cannot check the stock right now.", "the turn did not reach the scripted reply"
    assert evaluate(kernel, "turn.tool_calls[0].is_error") is True, "the raising tool call is not marked as an error"

    tool_messages = evaluate(kernel, "[m['content'] for m in turn.llm_requests[1].messages if m['role'] == 'tool']")
    assert len(tool_messages) == 1, f"the second model call did not get exactly one tool message: {tool_messages}"
    assert error_text in tool_messages[0], f"the model's tool message does not carry the error: {tool_messages[0]!r}"

    assert evaluate(kernel, "turn.tool_calls[0].traceback is not None") is True, "the raising tool call has no traceback"
    traceback = evaluate(kernel, "turn.tool_calls[0].traceback")
    assert f"RuntimeError: {error_text}" in traceback, f"the traceback does not end in the exception: {traceback!r}"
    assert "flaky_inventory" in traceback, f"the traceback does not show the tool function's frame: {traceback!r}"


# ---------------------------------------------------------------------------
# Parked turns, resumed from Python
# ---------------------------------------------------------------------------


def test_confirm_resumes_parked_turn(kernel: BlockingKernelClient) -> None:
    run_checked(kernel, CANCEL_ORDER_TOOL)
    run_checked(
        kernel,
        cell(
            """
            srv.mock.tool_call("cancel_order", {"order_id": "A-2002"}).reply("Order A-2002 is cancelled.")
            chat = srv.session()
            parked = await chat.send("Please cancel order A-2002")
            status_while_parked = parked.status
            pending_while_parked = parked.pending
            ran_while_parked = list(ran)
            """
        ),
    )

    assert evaluate(kernel, "status_while_parked") == "parked", "the confirm tool's turn did not park"
    pending = evaluate(kernel, "pending_while_parked")
    assert pending is not None, "the parked turn has no pending"
    assert pending["kind"] == "confirmation", f"the parked turn does not wait for a confirmation: {pending}"
    assert pending["tool"] == "cancel_order", f"the pending confirmation names the wrong tool: {pending}"
    assert evaluate(kernel, "ran_while_parked") == [], "the tool ran before it was confirmed"

    run_checked(kernel, "resumed = await chat.confirm(True)")

    assert evaluate(kernel, "resumed is parked") is True, "confirm() returned a different Turn than the parked one"
    assert evaluate(kernel, "resumed.status") == "done", f"the confirmed turn did not finish: {evaluate(kernel, 'resumed.error')}"
    assert evaluate(kernel, "resumed.pending is None") is True, "the finished turn still has a pending"
    assert evaluate(kernel, "resumed.tool_calls[0].result") == "order A-2002 cancelled", "the tool result is missing after confirm"
    assert evaluate(kernel, "resumed.tool_calls[0].is_error") is False, "the confirmed tool call is marked as an error"
    assert evaluate(kernel, "ran") == ["A-2002"], "the confirmed tool did not run exactly once"
    assert evaluate(kernel, "resumed.text") == "Order A-2002 is cancelled.", "the resumed turn did not reach the scripted reply"


def test_denied_confirmation_skips_tool(kernel: BlockingKernelClient) -> None:
    run_checked(kernel, CANCEL_ORDER_TOOL)
    run_checked(
        kernel,
        cell(
            """
            srv.mock.tool_call("cancel_order", {"order_id": "A-2002"}).reply("I did not cancel the order.")
            chat = srv.session()
            parked = await chat.send("Please cancel order A-2002")
            """
        ),
    )
    assert evaluate(kernel, "parked.status") == "parked", "the confirm tool's turn did not park"

    run_checked(kernel, "denied = await chat.confirm(False)")

    assert evaluate(kernel, "denied.status") == "done", f"the denied turn did not finish: {evaluate(kernel, 'denied.error')}"
    assert evaluate(kernel, "denied.tool_calls[0].is_error") is True, "the denied tool call is not marked as an error"
    assert evaluate(kernel, "ran") == [], "the tool function ran although the confirmation was denied"
    assert evaluate(kernel, "denied.text") == "I did not cancel the order.", "the denied turn did not reach the scripted reply"


def test_submit_validates_then_resumes(kernel: BlockingKernelClient) -> None:
    run_checked(
        kernel,
        cell(
            """
            chat = srv.session(supports=["identity_form"])
            srv.mock.tool_call(
                "request_identity_intake",
                {"fields": [{"key": "email", "required": True}], "reason": "We need your email to find the order."},
            ).reply("Thanks, I found your order.")
            parked = await chat.send("Where is my order?")
            pending_at_park = parked.pending
            """
        ),
    )

    assert evaluate(kernel, "parked.status") == "parked", "the identity intake did not park the turn"
    pending = evaluate(kernel, "pending_at_park")
    assert pending["kind"] == "interaction", f"the parked turn does not wait for an interaction: {pending}"
    assert pending["interaction"] == "identity_intake", f"the pending interaction has the wrong kind: {pending}"
    assert pending["spec"] == {"fields": [{"key": "email", "required": True}]}, f"the pending spec is wrong: {pending}"

    run_checked(kernel, "rejected = await chat.submit({'email': 'nope'})")

    assert evaluate(kernel, "rejected.status") == "parked", "invalid values resumed the turn"
    errors = evaluate(kernel, "rejected.pending.get('errors', [])")
    assert errors, "the still-parked turn does not say what was invalid"
    assert [error["field"] for error in errors] == ["email"], f"the errors do not name the email field: {errors}"

    run_checked(kernel, "accepted = await chat.submit({'email': 'ada@example.com'})")

    assert evaluate(kernel, "accepted.status") == "done", f"valid values did not finish the turn: {evaluate(kernel, 'accepted.error')}"
    assert evaluate(kernel, "accepted.text") == "Thanks, I found your order.", "the resumed turn did not reach the scripted reply"
    result = json.loads(evaluate(kernel, "accepted.tool_calls[0].result"))
    assert result.get("values") == {"email": "ada@example.com"}, f"the model did not get the submitted values: {result}"


def test_cancel_parked_turn(kernel: BlockingKernelClient) -> None:
    run_checked(kernel, CANCEL_ORDER_TOOL)
    # Only the tool call is queued, because a cancelled turn never makes the model call that a reply would serve.
    run_checked(
        kernel,
        cell(
            """
            srv.mock.tool_call("cancel_order", {"order_id": "A-2002"})
            chat = srv.session()
            parked = await chat.send("Please cancel order A-2002")
            """
        ),
    )
    assert evaluate(kernel, "parked.status") == "parked", "the confirm tool's turn did not park"

    run_checked(kernel, "cancelled = await chat.cancel()")

    assert evaluate(kernel, "cancelled is parked") is True, "cancel() did not return the parked turn"
    assert evaluate(kernel, "cancelled.status") == "cancelled", "the parked turn is not cancelled"
    assert evaluate(kernel, "cancelled.pending is None") is True, "the cancelled turn still has a pending"
    assert evaluate(kernel, "ran") == [], "the tool ran although its turn was cancelled"


# ---------------------------------------------------------------------------
# Every turn on the server
# ---------------------------------------------------------------------------


def test_turns_include_every_client(kernel: BlockingKernelClient) -> None:
    run_checked(kernel, CANCEL_ORDER_TOOL)
    run_checked(kernel, "srv.mock.tool_call('cancel_order', {'order_id': 'A-3003'}).reply('Order A-3003 is cancelled.')")
    ws_url = evaluate(kernel, "srv.ws_url")
    token = evaluate(kernel, "srv.token")
    external_message = "Please cancel order A-3003"

    # This client runs in the test process, as the chat widget runs in the browser.
    with websockets.sync.client.connect(f"{ws_url}?token={quote(token)}", open_timeout=SOCKET_TIMEOUT) as connection:
        connection.send(json.dumps({"action": "create_conversation_session", "requestId": "create", "agentId": AGENT_ID}))
        session_id = receive_reply(connection, "create")["data"]["sessionId"]
        send = {"action": "send_message", "requestId": "external-turn", "sessionId": session_id, "message": external_message}
        connection.send(json.dumps(send))
        receive_event(connection, "write_confirmation_required")

        run_checked(kernel, "external = srv.turns[-1]")
        assert evaluate(kernel, "external.request_id") == "external-turn", "srv.turns does not end with the external client's turn"
        assert evaluate(kernel, "external.message") == external_message, "the external turn has the wrong message"
        assert evaluate(kernel, "external.status") == "parked", "the external turn does not show as parked"

        confirm = {"action": "confirm_tool_action", "requestId": "external-turn", "sessionId": session_id, "approved": True}
        connection.send(json.dumps(confirm))
        receive_event(connection, "eventual_response")

    # The same Turn object, read again, shows what happened since.
    assert evaluate(kernel, "external.status") == "done", "the Turn read while parked did not follow the turn to its end"
    assert evaluate(kernel, "external.tool_calls[0].result") == "order A-3003 cancelled", "the external turn's tool result is missing"

    run_checked(
        kernel,
        cell(
            """
            count_before = len(srv.turns)
            await srv.session().send("Hello from a chat")
            turns_after = [(turn.message, turn.status) for turn in srv.turns]
            """
        ),
    )
    turns_after = evaluate(kernel, "turns_after")
    assert len(turns_after) == evaluate(kernel, "count_before") + 1, f"srv.turns did not grow by the chat's turn: {turns_after}"
    assert turns_after[-1] == ("Hello from a chat", "done"), f"the newest entry is not the finished chat turn: {turns_after}"
    assert (external_message, "done") in turns_after, f"the external client's turn is gone from srv.turns: {turns_after}"


# ---------------------------------------------------------------------------
# Knowledge base
# ---------------------------------------------------------------------------


def test_kb_search_ranks_then_clears(kernel: BlockingKernelClient) -> None:
    run_checked(
        kernel,
        cell(
            """
            srv.kb.clear()
            srv.kb.add("Gift cards never expire and can be used on any order.", source="policies/gift-cards.md")
            srv.kb.add("Store credit from a returned gift expires after one year.", source="policies/store-credit.md")
            srv.kb.add("Our warehouse is closed on public holidays.", source="policies/warehouse.md")
            hits = [(hit.source, hit.score) for hit in srv.kb.search("do gift cards expire?")]
            """
        ),
    )

    assert evaluate(kernel, "len(srv.kb)") == 3, "the knowledge base does not hold the three added documents"
    hits = evaluate(kernel, "hits")
    assert hits, "the search found nothing"
    assert hits[0][0] == "policies/gift-cards.md", f"the best hit is not the gift card policy: {hits}"
    scores = [score for _, score in hits]
    assert scores == sorted(scores, reverse=True), f"the hits are not ranked by descending score: {hits}"
    assert all(score > 0 for score in scores), f"a hit has no positive score: {hits}"
    assert "policies/warehouse.md" not in [source for source, _ in hits], f"a document sharing no term was returned: {hits}"

    run_checked(kernel, "srv.kb.clear()")

    assert evaluate(kernel, "len(srv.kb)") == 0, "clear() left documents in the knowledge base"
    assert evaluate(kernel, "list(srv.kb.search('gift cards'))") == [], "the cleared knowledge base still returns hits"


def test_kb_add_files_counts_matches(kernel: BlockingKernelClient, tmp_path: Path) -> None:
    run_checked(
        kernel,
        cell(
            f"""
            from pathlib import Path

            root = Path({str(tmp_path)!r})
            (root / "docs" / "faq").mkdir(parents=True)
            (root / "other").mkdir()
            (root / "docs" / "returns.md").write_text("Returns are accepted for 30 days.", encoding="utf-8")
            (root / "docs" / "faq" / "shipping.md").write_text("Parcels to Iceland travel by ferry.", encoding="utf-8")
            (root / "docs" / "notes.txt").write_text("Not markdown.", encoding="utf-8")
            (root / "other" / "ignored.md").write_text("Outside the pattern.", encoding="utf-8")
            count = srv.kb.add_files("docs/**/*.md", root=root)
            """
        ),
    )

    assert evaluate(kernel, "count") == 2, "add_files did not count the two markdown files under docs/"
    sources = evaluate(kernel, "srv.kb.sources()")
    assert "docs/returns.md" in sources, f"a top-level match is missing: {sources}"
    assert "docs/faq/shipping.md" in sources, f"a nested match is missing, so ** did not recurse: {sources}"
    assert "docs/notes.txt" not in sources, f"a file not matching *.md was added: {sources}"
    assert "other/ignored.md" not in sources, f"a file outside docs/ was added: {sources}"
    hits = evaluate(kernel, "[hit.source for hit in srv.kb.search('ferry to Iceland')]")
    assert hits[:1] == ["docs/faq/shipping.md"], f"the added file's text is not searchable: {hits}"


def test_kb_add_files_without_match_raises(kernel: BlockingKernelClient, tmp_path: Path) -> None:
    run_checked(
        kernel,
        cell(
            f"""
            documents_before = len(srv.kb)
            try:
                srv.kb.add_files("missing/**/*.md", root={str(tmp_path)!r})
            except FileNotFoundError as exc:
                failure = str(exc)
            else:
                failure = None
            """
        ),
    )

    assert evaluate(kernel, "failure is not None") is True, "add_files with a pattern that matches nothing did not raise FileNotFoundError"
    failure = evaluate(kernel, "failure")
    assert "missing/**/*.md" in failure, f"the message does not name the pattern: {failure!r}"
    assert str(tmp_path) in failure, f"the message does not name the root folder: {failure!r}"
    assert evaluate(kernel, "len(srv.kb) == documents_before") is True, "the failed add_files changed the knowledge base"


# ---------------------------------------------------------------------------
# Scripted model
# ---------------------------------------------------------------------------


def test_mock_queue_counts_down(kernel: BlockingKernelClient) -> None:
    run_checked(kernel, ORDER_STATUS_TOOL)
    run_checked(
        kernel,
        cell(
            """
            pending = [srv.mock.pending]
            srv.mock.reply("First scripted reply.").tool_call("order_status", {"order_id": "A-1"}).reply("Second scripted reply.")
            pending.append(srv.mock.pending)
            chat = srv.session()
            first = await chat.send("one")
            pending.append(srv.mock.pending)
            second = await chat.send("two")
            pending.append(srv.mock.pending)
            third = await chat.send("three")
            pending.append(srv.mock.pending)
            """
        ),
    )

    assert evaluate(kernel, "pending") == [0, 3, 2, 0, 0], "srv.mock.pending did not count the queue down reply by reply"
    assert evaluate(kernel, "first.text") == "First scripted reply.", "the first turn did not answer the first queued reply"
    assert evaluate(kernel, "[c.name for c in second.tool_calls]") == ["order_status"], "the second turn did not run the queued tool call"
    assert evaluate(kernel, "second.text") == "Second scripted reply.", "the second turn did not answer the reply queued after the tool call"
    assert evaluate(kernel, "third.text") == FALLBACK_REPLY, "with the queue empty, the turn did not answer the --mock-reply text"


# ---------------------------------------------------------------------------
# Replay and compare
# ---------------------------------------------------------------------------


def test_replay_changes_only_instructions(kernel: BlockingKernelClient) -> None:
    second_message = "And how long does shipping take?"
    run_checked(
        kernel,
        cell(
            f"""
            chat = srv.session()
            first = await chat.send({RETURNS_QUESTION!r})
            second = await chat.send({second_message!r})
            srv.mock.reply("Shipping takes 5 to 7 business days.")
            replayed = await second.replay(instructions="Answer in one short sentence.")
            messages = replayed.llm_requests[0].messages
            """
        ),
    )

    system = evaluate(kernel, "messages[0]")
    assert system["role"] == "system", f"the replayed call does not start with a system prompt: {system}"
    assert system["content"].startswith("Answer in one short sentence."), f"the new instructions are not the system prompt: {system['content']!r}"
    assert evaluate(kernel, "messages[-1]") == {"role": "user", "content": second_message}, "the replay did not send the same user message"
    messages = evaluate(kernel, "messages")
    assert {"role": "user", "content": RETURNS_QUESTION} in messages, f"the replay lost the first user message: {messages}"
    assert {"role": "assistant", "content": FALLBACK_REPLY} in messages, f"the replay lost the first answer: {messages}"
    assert evaluate(kernel, "replayed.message") == second_message, "the replayed turn has a different message"
    assert evaluate(kernel, "replayed.session_id != second.session_id") is True, "the replay ran in the original session"
    assert evaluate(kernel, "replayed.text") == "Shipping takes 5 to 7 business days.", "the replayed turn did not answer the queued reply"


def test_replay_without_tools_offers_none(kernel: BlockingKernelClient) -> None:
    run_checked(kernel, ORDER_STATUS_TOOL)
    run_checked(
        kernel,
        cell(
            """
            original = await srv.session().send("Where is order A-1001?")
            bare = await original.replay(tools=[])
            offered_before = [spec["function"]["name"] for spec in original.llm_requests[0].tools]
            offered_after = [spec["function"]["name"] for spec in bare.llm_requests[0].tools]
            """
        ),
    )

    custom_tools = evaluate(kernel, "sorted(srv.tools)")
    assert "order_status" in evaluate(kernel, "offered_before"), "the original turn was not offered the cell's tool"
    offered_after = evaluate(kernel, "offered_after")
    assert not set(custom_tools) & set(offered_after), f"replay(tools=[]) still offered custom tools: {offered_after}"
    assert evaluate(kernel, "bare.status") == "done", f"the replay without tools did not finish: {evaluate(kernel, 'bare.error')}"


def test_compare_marks_differing_rows(kernel: BlockingKernelClient) -> None:
    replayed_text = "Returns are accepted for 17 days."
    run_checked(
        kernel,
        cell(
            f"""
            import smooth_nb

            original = await srv.session().send({RETURNS_QUESTION!r})
            srv.mock.reply({replayed_text!r})
            again = await original.replay(instructions="Be brief.")
            comparison = smooth_nb.compare(original, again)
            comparison_html = comparison._repr_html_()
            comparison_rows = repr(comparison).splitlines()
            """
        ),
    )

    comparison_html = evaluate(kernel, "comparison_html")
    assert FALLBACK_REPLY in comparison_html, "the HTML comparison does not show the original text"
    assert replayed_text in comparison_html, "the HTML comparison does not show the replayed text"

    rows = {row[2:].split()[0]: row for row in evaluate(kernel, "comparison_rows")}
    assert rows["text"].startswith("≠"), f"the differing text row is not marked: {rows['text']!r}"
    assert not rows["message"].startswith("≠"), f"the equal message row is marked as differing: {rows['message']!r}"
    assert not rows["status"].startswith("≠"), f"the equal status row is marked as differing: {rows['status']!r}"


# ---------------------------------------------------------------------------
# Export to a scenario
# ---------------------------------------------------------------------------


async def test_exported_session_replays_green(kernel: BlockingKernelClient, tmp_path: Path) -> None:
    path = tmp_path / "captured-session.json"
    run_checked(kernel, ORDER_STATUS_TOOL)
    run_checked(kernel, CANCEL_ORDER_TOOL)
    run_checked(
        kernel,
        cell(
            f"""
            chat = srv.session()
            srv.mock.tool_call("order_status", {{"order_id": "A-1001"}}).reply("Order A-1001 has shipped.")
            tool_turn = await chat.send("Where is order A-1001?")
            srv.mock.tool_call("cancel_order", {{"order_id": "A-2002"}}).reply("Order A-2002 is cancelled.")
            parked = await chat.send("Please cancel order A-2002")
            status_while_parked = parked.status
            confirmed = await chat.confirm(True)
            scenario = chat.to_scenario({str(path)!r})
            """
        ),
    )
    assert evaluate(kernel, "tool_turn.status") == "done", "the tool turn to export did not finish"
    assert evaluate(kernel, "status_while_parked") == "parked", "the confirm tool's turn to export did not park"
    assert evaluate(kernel, "confirmed.status") == "done", "the confirmed turn to export did not finish"

    assert path.is_file(), f"to_scenario did not write {path}"
    scenario = json.loads(path.read_text(encoding="utf-8"))
    actions = [step["send"]["action"] for step in scenario["steps"]]
    assert actions == ["create_conversation_session", "send_message", "send_message", "confirm_tool_action"], (
        f"the scenario's steps do not follow the session: {actions}"
    )
    assert scenario["server"]["confirmTools"] == ["cancel_order"], f"the confirm tool is not exported: {scenario['server']}"

    with serve("--scenario", str(path), "--keepalive", "0") as server:
        frames = await run_scenario(scenario, server.ws_url)

    finals = [frame for frame in frames if frame.get("type") == "eventual_response"]
    texts = [frame["data"]["data"]["response"]["responseParts"] for frame in finals]
    assert texts == [["Order A-1001 has shipped."], ["Order A-2002 is cancelled."]], f"the replayed answers differ: {texts}"


async def test_exported_kb_turn_keeps_citations(kernel: BlockingKernelClient, tmp_path: Path) -> None:
    path = tmp_path / "captured-returns.json"
    run_checked(
        kernel,
        cell(
            f"""
            turn = await srv.session().send({RETURNS_QUESTION!r})
            scenario = turn.to_scenario({str(path)!r})
            """
        ),
    )

    scenario = json.loads(path.read_text(encoding="utf-8"))
    knowledge = {entry["source"]: entry["content"] for entry in scenario["server"].get("knowledge", [])}
    assert knowledge.get(RETURNS_SOURCE) == RETURNS_PASSAGE, f"the scenario does not carry the returns passage: {knowledge}"
    final = scenario["steps"][-1]["expect"][-1]
    assert final["type"] == "eventual_response", f"the last expectation is not the final answer: {final}"
    assert final["assert"].get("data.data.citations.0.id") == RETURNS_SOURCE, f"the final answer does not assert the citation: {final}"

    with serve("--scenario", str(path), "--keepalive", "0") as server:
        frames = await run_scenario(scenario, server.ws_url)

    finals = [frame for frame in frames if frame.get("type") == "eventual_response"]
    cited = [citation["id"] for citation in finals[-1]["data"]["data"].get("citations", [])]
    assert cited[:1] == [RETURNS_SOURCE], f"the replayed answer does not cite {RETURNS_SOURCE} first: {cited}"


def test_export_of_failed_turn_raises(kernel: BlockingKernelClient, tmp_path: Path) -> None:
    path = tmp_path / "failed.json"
    run_checked(
        kernel,
        cell(
            f"""
            from smooth_nb.notebook.export import ExportError

            chat = srv.session()
            srv.mock.error("the gateway is down")
            failed = await chat.send("will this work?")
            try:
                chat.to_scenario({str(path)!r})
            except ExportError as exc:
                failure = str(exc)
            else:
                failure = None
            """
        ),
    )

    assert evaluate(kernel, "failed.status") == "error", "a failing model call did not end its turn in an error"
    assert evaluate(kernel, "failure is not None") is True, "exporting a failed turn did not raise ExportError"
    failure = evaluate(kernel, "failure")
    assert evaluate(kernel, "failed.request_id") in failure, f"the message does not name the failed turn: {failure!r}"
    assert "TURN_FAILED" in failure, f"the message does not give the error code: {failure!r}"
    assert "replay" in failure, f"the message does not say which turns can be exported: {failure!r}"
    assert not path.exists(), "a scenario file was written although the export failed"


# ---------------------------------------------------------------------------
# Code that cannot await
# ---------------------------------------------------------------------------


def test_send_sync_patches_loop_lazily() -> None:
    loop_state = cell(
        """
        import asyncio
        loop = asyncio.get_running_loop()
        (hasattr(loop, "_nest_patched"), type(loop).run_until_complete is asyncio.BaseEventLoop.run_until_complete)
        """
    )
    with running_kernel(kernel_env()) as (_manager, client):
        start_server(client, "--mock-reply 'Synchronous hello.'")
        patched_after_start, original_after_start = evaluate(client, loop_state)

        synced = run_checked(client, "reply = srv.session().send_sync('Hello from code that cannot await')\nprint(reply.text)")
        status = evaluate(client, "reply.status")
        patched_after_send, original_after_send = evaluate(client, loop_state)
        run_cell(client, "%smooth_local stop")

    assert patched_after_start is False, "nest-asyncio was applied by %load_ext or %smooth_local start"
    assert original_after_start is True, "the loop's run_until_complete was replaced before any send_sync"
    assert synced.stdout.strip() == "Synchronous hello.", f"send_sync did not return the turn's text: {synced.stdout!r}"
    assert status == "done", "the turn sent with send_sync did not finish"
    assert patched_after_send is True, "send_sync ran without applying nest-asyncio to the kernel's loop"
    assert original_after_send is False, "the loop's run_until_complete is still the original after send_sync"


# ---------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------


def test_tap_rows_grow_during_turn(kernel: BlockingKernelClient) -> None:
    run_checked(
        kernel,
        cell(
            '''
            import ipywidgets

            tap = srv.tap()
            seen_by_tool = []

            @srv.tool
            def order_status(order_id: str) -> str:
                """Look up where an order is."""
                seen_by_tool.append(tap.frames_seen)
                return "shipped"

            srv.mock.tool_call("order_status", {"order_id": "A-1"}).reply("It has shipped.")
            seen_before = tap.frames_seen
            turn = await srv.session().send("Where is order A-1?")
            seen_after = tap.frames_seen
            '''
        ),
    )
    # The tap redraws at most ten times a second, so give it time before reading its HTML.
    run_checked(kernel, "import asyncio\nawait asyncio.sleep(0.5)\ntap_html = tap.children[-1].value\ntap.close()")

    assert evaluate(kernel, "isinstance(tap, ipywidgets.Widget)") is True, "srv.tap() did not return an ipywidget"
    seen_before = evaluate(kernel, "seen_before")
    seen_by_tool = evaluate(kernel, "seen_by_tool")
    seen_after = evaluate(kernel, "seen_after")
    assert seen_before == 0, f"the tap saw frames before any turn ran: {seen_before}"
    assert len(seen_by_tool) == 1, f"the tool did not run exactly once: {seen_by_tool}"
    assert seen_by_tool[0] > 0, f"the tap had seen no frame while the turn ran: {seen_by_tool}"
    assert seen_after > seen_by_tool[0], f"the tap saw no frames after the tool ran: {seen_by_tool[0]} then {seen_after}"
    tap_html = evaluate(kernel, "tap_html")
    assert "eventual_response" in tap_html, f"the tap's table has no row for the final answer: {tap_html[:500]!r}"


def test_tap_counts_frames_past_max_rows(kernel: BlockingKernelClient) -> None:
    run_checked(
        kernel,
        cell(
            """
            tap = srv.tap(max_rows=2)
            srv.mock.reply("A reply long enough to stream in several tokens.")
            turn = await srv.session().send("Hello?")
            tap.close()
            """
        ),
    )

    # The session's create reply is the one frame the tap receives that is not an event of the turn.
    frames_sent = evaluate(kernel, "len(turn.events)") + 1
    assert evaluate(kernel, "tap.frames_seen") == frames_sent, "frames_seen lost the frames scrolled out of the table"


def test_turn_views_show_timeline(kernel: BlockingKernelClient) -> None:
    message = "Is <b>A-1001</b> & co shipped?"
    run_checked(kernel, ORDER_STATUS_TOOL)
    run_checked(
        kernel,
        cell(
            f"""
            srv.mock.tool_call("order_status", {{"order_id": "A-1001"}}).reply("Yes, it has shipped.")
            turn = await srv.session().send({message!r})
            turn_html = turn._repr_html_()
            turn_text = repr(turn)
            """
        ),
    )

    turn_html = evaluate(kernel, "turn_html")
    assert "Is &lt;b&gt;A-1001&lt;/b&gt; &amp; co shipped?" in turn_html, "the HTML view does not show the escaped message"
    assert "<b>A-1001</b>" not in turn_html, "the HTML view shows the message's markup unescaped"
    assert ">done</span>" in turn_html, "the HTML view has no done status badge"
    assert "first token" in turn_html, "the HTML view has no timeline with the first token"
    assert "order_status" in turn_html, "the HTML view does not list the tool call"
    assert "eventual_response" in turn_html, "the HTML view's event table has no final answer row"

    turn_text = evaluate(kernel, "turn_text")
    request_id = evaluate(kernel, "turn.request_id")
    assert turn_text.startswith(f"Turn {request_id} [done] {message!r}"), f"repr(turn) does not start with the turn's summary: {turn_text!r}"
    assert "tool order_status(" in turn_text, f"repr(turn) does not list the tool call: {turn_text!r}"
    assert "<span" not in turn_text, f"repr(turn) contains HTML spans: {turn_text!r}"
    assert "<div" not in turn_text, f"repr(turn) contains HTML divs: {turn_text!r}"


# ---------------------------------------------------------------------------
# The debugging notebook
# ---------------------------------------------------------------------------


def test_debugging_notebook_runs_clean(tmp_path: Path) -> None:
    notebook = nbformat.read(DEBUGGING_NOTEBOOK, as_version=4)
    executor = NotebookClient(
        notebook,
        kernel_name=KERNEL_NAME,
        timeout=CELL_TIMEOUT,
        startup_timeout=KERNEL_START_TIMEOUT,
        # The notebook writes its exported scenario to the kernel's working folder.
        resources={"metadata": {"path": str(tmp_path)}},
    )
    # nbclient raises CellExecutionError on the first cell that fails.
    executor.execute(env=kernel_env())

    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    for index, code in enumerate(code_cells):
        assert code.execution_count is not None, f"code cell {index} did not run: {code.source!r}"
        errors = [output for output in code.outputs if output.output_type == "error"]
        assert not errors, f"code cell {index} has error outputs: {errors}"
    all_output = "\n".join(plain_text(output) for c in code_cells for output in c.outputs)

    tool_lines = cell_stdout(code_cell_with(notebook, "tool_turn = await chat.send(")).splitlines()
    assert tool_lines, f"the tool turn cell printed nothing; all output:\n{all_output}"
    assert tool_lines[0].startswith("order_status "), f"the tool turn did not call order_status: {tool_lines[0]!r}"
    assert "shipped" in tool_lines[0], f"the tool turn's result does not say shipped: {tool_lines[0]!r}"
    assert tool_lines[0].endswith("error: False"), f"the tool turn's call is marked as an error: {tool_lines[0]!r}"

    parked = cell_stdout(code_cell_with(notebook, "parked = await chat.send(")).split()
    resumed = cell_stdout(code_cell_with(notebook, "resumed = await chat.confirm(True)")).split()
    assert parked[:1] == ["parked"], f"the confirm tool's turn did not print parked: {parked}"
    assert resumed[:1] == ["done"], f"the confirmed turn did not print done: {resumed}"

    synced = cell_stdout(code_cell_with(notebook, "send_sync("))
    assert synced.strip() == "Synchronous hello.", f"send_sync did not print its reply: {synced!r}"
    assert (tmp_path / "captured-tool-turn.json").is_file(), "the export cell did not write its scenario file"
