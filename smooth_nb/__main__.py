"""Command line: ``python -m smooth_nb serve``, the local server in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from smooth_nb.server.local import DEFAULT_HOST, DEFAULT_PORT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m smooth_nb", description="smooth-nb local smooth-operator server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the local server until interrupted")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to bind, 0 for any free port (default {DEFAULT_PORT})")
    serve.add_argument("--seed-kb", action="store_true", help="load the demo knowledge base (policies/returns.md, policies/shipping.md)")
    model = serve.add_mutually_exclusive_group()
    model.add_argument("--mock-reply", metavar="TEXT", help="answer every turn with TEXT instead of calling a model")
    model.add_argument("--offline", action="store_true", help="no model: answer with the best knowledge-base passage")
    model.add_argument("--scenario", metavar="FILE", help="replay a conformance scenario: its scripted model, tools and knowledge")
    serve.add_argument("--token", help="require this token on /ws (?token=...); auth is off by default on loopback")
    serve.add_argument("--origin", action="append", default=[], metavar="URL", help="also accept browser pages from this origin (scheme://host:port); repeatable")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME", help="also accept this name in the Host header; repeatable")
    serve.add_argument("--allow-no-auth", action="store_true", help="allow a non-loopback --host without --token")
    serve.add_argument("--keepalive", type=float, default=30.0, metavar="SECONDS", help="keepalive interval on idle connections, 0 to disable (default 30)")
    serve.add_argument("--widget", action="store_true", help="serve the chat page at / and its script at /chat-widget.iife.js")
    serve.add_argument(
        "--log-level", default="WARNING", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (default WARNING)"
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    from smooth_nb.engine import ModelSettings
    from smooth_nb.server.local import LocalServer

    settings = ModelSettings.from_env(mock_reply=args.mock_reply, offline=args.offline)
    builder = LocalServer.builder().addr((args.host, args.port)).seed_kb(args.seed_kb).model(settings)
    builder.auth(args.token, allow_no_auth=args.allow_no_auth)
    builder.config(keepalive_seconds=args.keepalive, allowed_origins=tuple(args.origin), allowed_hosts=tuple(args.allow_host))
    if args.scenario:
        from smooth_nb.server.scenario import configure_builder, load_scenario

        configure_builder(builder, load_scenario(args.scenario))
    if args.widget:
        builder.serve_widget()
        builder.config(notice=builder.model_settings.notice())
    server = await builder.spawn()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"listening on {server.ws_url}", flush=True)
    if server.model.mode == "unavailable":
        print("no model configured: send_message answers LLM_UNAVAILABLE (set SMOOAI_GATEWAY_KEY)", flush=True)
    _tune_for_serving()
    await stop.wait()
    await server.shutdown()


def _tune_for_serving() -> None:
    """Load the engine now and tune the garbage collector for a process that only serves.

    The modules and objects alive after start-up are frozen out of the
    collector's scans, and young collections run less often, which cuts the
    pauses that set tail latency under load (see docs/PERFORMANCE.md). A server
    inside a notebook kernel leaves the kernel's collector alone.
    """
    import gc

    from smooth_nb.engine import warm_up

    warm_up()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(args))
    except (OSError, ValueError) as exc:  # bind failures, bad addresses, unusable scenario files
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
