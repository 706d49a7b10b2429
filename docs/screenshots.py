"""Render the README's pictures of the turn timeline and of ``compare`` with headless Chromium.

Runs a server in this process on the scripted mock model, drives a few turns
through the notebook API (no kernel needed: the API only needs a running loop),
and screenshots the HTML views into ``docs/images/``.

Run: ``python docs/screenshots.py`` (needs Debian's chromium at /usr/bin/chromium).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import async_playwright

from smooth_nb.engine import ModelSettings
from smooth_nb.notebook.handle import NotebookServer
from smooth_nb.notebook.views import compare
from smooth_nb.server import LocalServer

IMAGES = Path(__file__).resolve().parent / "images"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


async def render(page, body: str, path: Path) -> None:
    await page.set_content(f"<!doctype html><html><body style='margin:16px;background:#fff'>{body}</body></html>")
    for summary in await page.query_selector_all("details"):
        await summary.evaluate("node => node.open = true")
    element = await page.query_selector("body > *")
    await element.screenshot(path=str(path))


async def main() -> None:
    handle = await LocalServer.builder().addr("127.0.0.1:0").seed_kb(True).model(ModelSettings(mode="mock", mock_reply="unused")).spawn()
    srv = NotebookServer(handle)

    @srv.tool
    def order_status(order_id: str) -> dict:
        """Look up where an order is."""
        return {"order": order_id, "status": "shipped", "eta": "Tuesday"}

    chat = srv.session()
    srv.mock.tool_call("order_status", {"order_id": "A-1001"}).reply("Order A-1001 has shipped; it arrives Tuesday. Returns are accepted for 17 days after delivery.")
    turn = await chat.send("Where is order A-1001, and can I return it?")
    srv.mock.reply("A-1001 arrives Tuesday.")
    shorter = await turn.replay(instructions="Answer in five words.", tools=[])

    IMAGES.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 900, "height": 900})
        await render(page, turn._repr_html_(), IMAGES / "turn-timeline.png")
        await render(page, compare(turn, shorter)._repr_html_(), IMAGES / "compare.png")
        await browser.close()
    await chat.close()
    await handle.shutdown()
    print(f"wrote {IMAGES / 'turn-timeline.png'} and {IMAGES / 'compare.png'}")


if __name__ == "__main__":
    asyncio.run(main())
