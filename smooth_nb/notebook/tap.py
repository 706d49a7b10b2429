"""``srv.tap()``: a live view of the frames flowing on every session of a server.

The tap listens to every frame the server sends and redraws an HTML widget at
most ten times a second, folding runs of streamed tokens into one row, so
watching a turn costs the kernel little even at hundreds of tokens a second.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections import deque
from typing import Any

import ipywidgets

_REDRAW_SECONDS = 0.1


class Tap(ipywidgets.VBox):
    """A live table of frames; ``tap.close()`` stops listening."""

    def __init__(self, state: Any, *, max_rows: int = 200) -> None:
        self._state = state
        self._rows: deque[list[Any]] = deque(maxlen=max_rows)
        self._started = time.perf_counter()
        self._frames_seen = 0
        self._scheduled = False
        self._view = ipywidgets.HTML()
        self._count = ipywidgets.HTML()
        super().__init__([self._count, self._view])
        state.frame_listeners.append(self._on_frame)
        self._redraw()

    @property
    def frames_seen(self) -> int:
        """Frames received since the tap opened, keepalives excluded, including those scrolled out of the table."""
        return self._frames_seen

    def _on_frame(self, connection: Any, frame: dict[str, Any]) -> None:
        kind = str(frame.get("type"))
        if kind == "keepalive":
            return
        self._frames_seen += 1
        at = time.perf_counter() - self._started
        request_id = str(frame.get("requestId", ""))
        last = self._rows[-1] if self._rows else None
        if kind == "stream_token" and last is not None and last[1] == kind and last[2] == request_id:
            last[3] += 1
            last[4] += str(frame.get("token", ""))
        else:
            detail = str(frame.get("token", "")) if kind == "stream_token" else _detail(frame)
            self._rows.append([at, kind, request_id, 1, detail])
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_later(_REDRAW_SECONDS, self._redraw)
            except RuntimeError:
                self._redraw()

    def _redraw(self) -> None:
        self._scheduled = False
        rows = "".join(
            f"<tr><td style='text-align:right;padding-right:8px'>{at:7.3f}s</td>"
            f"<td><code>{html.escape(kind)}{f' × {count}' if count > 1 else ''}</code></td>"
            f"<td style='padding:0 8px'>{html.escape(request_id[:12])}</td><td>{html.escape(detail[:160])}</td></tr>"
            for at, kind, request_id, count, detail in self._rows
        )
        self._count.value = f"<div style='font-size:12px'>tap: {len(self._rows)} rows (newest last)</div>"
        self._view.value = f"<table style='font-size:12px'>{rows}</table>"

    def close(self) -> None:
        if self._on_frame in self._state.frame_listeners:
            self._state.frame_listeners.remove(self._on_frame)
        super().close()


def _detail(frame: dict[str, Any]) -> str:
    if frame.get("type") == "error":
        error = frame.get("error") or {}
        return f"{error.get('code')}: {error.get('message')}"
    data = frame.get("data")
    if frame.get("type") == "stream_chunk" and isinstance(data, dict):
        return json.dumps((data.get("state") or {}).get("rawResponse"), ensure_ascii=False)
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        return json.dumps(data["data"], ensure_ascii=False)
    return str(frame.get("status", ""))
