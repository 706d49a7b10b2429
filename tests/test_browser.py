"""The chat widget in headless Chromium, against real ``smooth_nb serve`` processes.

Each test starts the server (and, where a model is needed, the stand-in
gateway) as real processes on 127.0.0.1 and drives the widget through its
``data-testid`` hooks the way a user would: type, click Send, read the page.

The browser is Debian's Chromium at /usr/bin/chromium, launched through
Playwright's sync API. Playwright's own browser download is never used. When
that binary is missing the tests are skipped, unless the CI environment
variable is set, in which case they fail, because CI installs the browser.

Screenshots go to ``test-artifacts/`` under the repository root.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from smooth_nb.notebook.widget import fallback_html
from tests.support.browser import launch_chromium
from tests.support.cli import clean_env, serve
from tests.support.stand_in_gateway import run_stand_in_gateway
from tests.support.wire import REPO

ARTIFACTS = REPO / "test-artifacts"

RETURNS_QUESTION = "How long do I have to return an order?"
GATEWAY_KEY = "browser-test-key"

# Upper bound for every wait on the page, in milliseconds.
WAIT_MS = 30_000


# ---------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch_chromium()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 800, "height": 600})
    context.set_default_timeout(WAIT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def chat_root(page: Page) -> Locator:
    return page.get_by_test_id("smooth-chat")


def open_chat(page: Page, url: str) -> Locator:
    """Load a page containing the widget and wait until its session is open."""
    page.goto(url, timeout=WAIT_MS)
    root = chat_root(page)
    expect(root, "the widget connects and opens a session").to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    return root


def send_message(page: Page, text: str) -> None:
    page.get_by_test_id("smooth-chat-input").fill(text)
    page.get_by_test_id("smooth-chat-send").click()


def last_message(page: Page, role: str) -> Locator:
    return page.locator(f'[data-testid="smooth-chat-message"][data-role="{role}"]').last


def wait_for_answer(page: Page) -> Locator:
    """Wait until the newest assistant bubble is marked done, and return it."""
    bubble = last_message(page, "assistant")
    expect(bubble, "the assistant bubble finishes").to_have_attribute("data-done", "true", timeout=WAIT_MS)
    return bubble


def save_screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    chat_root(page).screenshot(path=str(path), timeout=WAIT_MS)
    return path


@dataclass
class StaticPage:
    """An HTML document served at ``/`` from 127.0.0.1. Set ``document`` before loading ``url``."""

    origin: str
    document: str = ""

    @property
    def url(self) -> str:
        return self.origin + "/"


@contextlib.contextmanager
def serve_static_page() -> Iterator[StaticPage]:
    """Serve a page from its own loopback origin, a different port from the chat server's.

    The port is known before the document is written, so a test can pass the
    page's origin to ``serve --origin`` and then embed the server's URL.
    """

    class PageHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = static_page.document.encode("utf-8")
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
    static_page = StaticPage(origin=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield static_page
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def fallback_document(ws_url: str) -> str:
    """Wrap the notebook's ``text/html`` fallback in a complete page."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>fallback</title></head>\n'
        f"<body>\n{fallback_html(ws_url)}\n</body></html>\n"
    )


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_widget_answer_streams_with_citation(page: Page):
    with run_stand_in_gateway(key=GATEWAY_KEY, delay_ms=30) as gateway:
        env = clean_env(SMOOAI_GATEWAY_URL=gateway.base_url, SMOOAI_GATEWAY_KEY=GATEWAY_KEY)
        with serve("--seed-kb", "--widget", env=env) as server:
            open_chat(page, server.http_url + "/")
            send_message(page, RETURNS_QUESTION)

            bubble = last_message(page, "assistant")
            bubble.wait_for(state="attached", timeout=WAIT_MS)
            # Read the flag and the text in one evaluation, so a snapshot
            # taken while the bubble is unfinished really is partial.
            snapshots: list[str] = []
            deadline = time.monotonic() + WAIT_MS / 1000
            while True:
                done, text = bubble.evaluate(
                    "el => [el.dataset.done, el.querySelector('[data-testid=\"smooth-chat-text\"]').textContent]"
                )
                if done == "true":
                    final_text = text
                    break
                snapshots.append(text)
                if time.monotonic() > deadline:
                    pytest.fail(f"the answer did not finish within {WAIT_MS} ms; last text {text!r}")
                time.sleep(0.01)

            citation = bubble.locator('[data-testid="smooth-chat-citation"][data-source="policies/returns.md"]')
            expect(citation, "the answer cites policies/returns.md").to_be_visible(timeout=WAIT_MS)
            screenshot = save_screenshot(page, "widget-answer.png")

    partial_texts = [text for text in snapshots if text and len(text) < len(final_text)]
    assert "17 days" in final_text, f"the final answer states the return window: {final_text!r}"
    assert partial_texts, f"some partial text was seen before the answer finished: {snapshots!r}"
    assert all(final_text.startswith(text) for text in partial_texts), f"partial texts are prefixes: {partial_texts!r}"
    assert screenshot.stat().st_size > 0, f"the screenshot was written to {screenshot}"


def test_missing_key_shows_error_bubble(page: Page):
    with serve("--widget", env=clean_env()) as server:
        open_chat(page, server.http_url + "/")
        send_message(page, "hello")

        error = last_message(page, "error")
        expect(error, "an error bubble appears").to_be_visible(timeout=WAIT_MS)
        error_text = error.text_content(timeout=WAIT_MS) or ""
        expect(last_message(page, "assistant"), "the failed turn is marked done").to_have_attribute(
            "data-done", "true", timeout=WAIT_MS
        )
        expect(page.get_by_test_id("smooth-chat-input"), "the input is enabled again").to_be_enabled(timeout=WAIT_MS)
        expect(page.get_by_test_id("smooth-chat-send"), "Send is enabled again").to_be_enabled(timeout=WAIT_MS)

        send_message(page, "hello again")
        errors = page.locator('[data-testid="smooth-chat-message"][data-role="error"]')
        expect(errors, "a second message gets its own error bubble").to_have_count(2, timeout=WAIT_MS)

    assert "LLM_UNAVAILABLE" in error_text or "SMOOAI_GATEWAY_KEY" in error_text, (
        f"the error names the cause or the fix: {error_text!r}"
    )


def test_stopped_server_shows_disconnected(page: Page):
    with serve("--widget", "--mock-reply", "unused") as server:
        root = open_chat(page, server.http_url + "/")

        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(15)

        expect(root, "the root reports the lost connection").to_have_attribute(
            "data-state", "disconnected", timeout=WAIT_MS
        )
        expect(page.get_by_test_id("smooth-chat-status"), "the status text says the server is gone").to_contain_text(
            "the server is gone", timeout=WAIT_MS
        )
        expect(page.get_by_test_id("smooth-chat-input"), "the input is disabled").to_be_disabled(timeout=WAIT_MS)
        expect(page.get_by_test_id("smooth-chat-send"), "Send is disabled").to_be_disabled(timeout=WAIT_MS)
        expect(page.get_by_test_id("smooth-chat-reconnect"), "Reconnect is offered").to_be_visible(timeout=WAIT_MS)

    assert exit_code == 0, f"the server exits cleanly on SIGTERM, got exit code {exit_code}"


def test_token_page_connects_and_answers(page: Page):
    with serve("--widget", "--token", "tok-123", "--mock-reply", "hi") as server:
        open_chat(page, server.http_url + "/")
        send_message(page, "hello")
        answer = wait_for_answer(page).get_by_test_id("smooth-chat-text").text_content(timeout=WAIT_MS)

    assert answer == "hi", f"the mock reply is shown: {answer!r}"


def test_wrong_token_shows_disconnected(page: Page):
    with serve("--widget", "--token", "tok-123", "--mock-reply", "hi") as server:
        page.goto(server.http_url + "/?token=wrong", timeout=WAIT_MS)

        expect(chat_root(page), "the root reports the rejected connection").to_have_attribute(
            "data-state", "disconnected", timeout=WAIT_MS
        )
        expect(page.get_by_test_id("smooth-chat-status"), "the status text says the connection was refused").to_contain_text(
            "could not connect", timeout=WAIT_MS
        )
        expect(page.get_by_test_id("smooth-chat-input"), "the input is disabled").to_be_disabled(timeout=WAIT_MS)
        server_output = "".join(server.output)

    assert "tok-123" not in server_output, "the server output never shows the token"


def test_fallback_html_answers_in_browser(page: Page):
    with serve_static_page() as static_page:
        with serve("--mock-reply", "fallback ok", "--origin", static_page.origin) as server:
            static_page.document = fallback_document(server.ws_url)
            open_chat(page, static_page.url)
            send_message(page, "hello")
            answer = wait_for_answer(page).get_by_test_id("smooth-chat-text").text_content(timeout=WAIT_MS)

    assert answer == "fallback ok", f"the mock reply is shown: {answer!r}"


def test_unlisted_origin_page_is_rejected(page: Page):
    with serve_static_page() as static_page:
        with serve("--mock-reply", "unused") as server:
            static_page.document = fallback_document(server.ws_url)
            page.goto(static_page.url, timeout=WAIT_MS)

            expect(chat_root(page), "a page from another origin cannot open /ws").to_have_attribute(
                "data-state", "disconnected", timeout=WAIT_MS
            )
            expect(page.get_by_test_id("smooth-chat-input"), "the input is disabled").to_be_disabled(timeout=WAIT_MS)


def test_offline_page_answers_from_knowledge_base(page: Page):
    with serve("--seed-kb", "--widget", "--offline", env=clean_env()) as server:
        open_chat(page, server.http_url + "/")
        send_message(page, RETURNS_QUESTION)
        bubble = wait_for_answer(page)
        answer = bubble.get_by_test_id("smooth-chat-text").text_content(timeout=WAIT_MS) or ""
        sources = bubble.get_by_test_id("smooth-chat-citation").evaluate_all(
            "items => items.map(item => item.dataset.source)"
        )
        screenshot = save_screenshot(page, "widget-offline.png")

    assert "17 days" in answer, f"the offline answer quotes the returns passage: {answer!r}"
    assert "policies/returns.md" in sources, f"the answer cites policies/returns.md: {sources!r}"
    assert screenshot.stat().st_size > 0, f"the screenshot was written to {screenshot}"
