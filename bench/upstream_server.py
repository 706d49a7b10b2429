"""Boot the upstream Python server (``smooai-smooth-operator-server`` from PyPI) on a mock model.

The upstream CLI reads its model from the environment only, so this launcher
builds the same in-memory, auth-off local flavor with the reply model
smooth-nb's ``--mock-reply`` uses (``RepeatingReplyProvider``: the same text,
streamed word by word, the same usage). Both servers then run identical turns.
The upstream coding tools are left out, as smooth-nb offers no tools by default.

Run: ``python bench/upstream_server.py --port 0 --reply TEXT``; it prints
``listening on ws://HOST:PORT/ws``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from smooth_operator_server import InMemorySessionStore, NoAuthVerifier, ServerState, serve

from smooth_nb.engine.offline import RepeatingReplyProvider


async def main() -> None:
    parser = argparse.ArgumentParser(description="upstream smooth-operator server on a mock model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply", default="Hello from the benchmark.")
    args = parser.parse_args()
    state = ServerState(store=InMemorySessionStore(), chat_client=RepeatingReplyProvider(args.reply), auth=NoAuthVerifier(), tools=[])
    server = await serve(state, args.host, args.port)
    print(f"listening on {server.ws_url()}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    server.drain()
    await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
