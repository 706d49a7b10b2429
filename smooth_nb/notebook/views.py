"""HTML views for the notebook: the turn timeline and the side-by-side comparison.

Everything here returns plain HTML strings with inline styles, so the views
render in JupyterLab, Notebook 7, VS Code and exported HTML alike. All text
from turns is escaped.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smooth_nb.notebook.turn import Turn

_FONT = "font-family: var(--jp-ui-font-family, system-ui, sans-serif); font-size: 12px; line-height: 1.45"
_MUTED = "color: var(--jp-ui-font-color2, #666)"
_STATUS_COLOR = {"done": "#2e7d32", "parked": "#ef6c00", "running": "#1565c0", "cancelled": "#6d4c41", "error": "#c62828"}


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    milliseconds = seconds * 1000
    return f"{milliseconds:.1f} ms" if milliseconds < 10 else f"{milliseconds:.0f} ms"


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _badge(status: str) -> str:
    color = _STATUS_COLOR.get(status, "#555")
    return f"<span style='background:{color};color:#fff;border-radius:3px;padding:0 6px'>{_esc(status)}</span>"


def _timeline_bar(turn: Turn) -> str:
    """Draw the turn on one horizontal axis: tool spans, the first token, parks, the end."""
    events = turn.events
    end = turn.duration or (events[-1].at if events else 0.0) or 1e-3
    end = max(end, 1e-3)

    def left(at: float) -> str:
        return f"{min(100.0, at / end * 100):.2f}%"

    marks = []
    for call in turn.tool_calls:
        finish = call.finished if call.finished is not None else end
        width = max(0.6, (finish - call.started) / end * 100)
        color = "#c62828" if call.is_error else "#6a1b9a"
        title = f"{call.name}: {_ms(call.duration)}"
        marks.append(
            f"<div title='{_esc(title)}' style='position:absolute;left:{left(call.started)};width:{width:.2f}%;"
            f"top:4px;height:10px;background:{color};opacity:.75;border-radius:2px'></div>"
        )
    for event in events:
        if event.type in ("write_confirmation_required", "interaction_required"):
            marks.append(f"<div title='parked: {_esc(event.type)}' style='position:absolute;left:{left(event.at)};top:0;width:2px;height:18px;background:#ef6c00'></div>")
    if turn.ttft is not None:
        marks.append(f"<div title='first token {_ms(turn.ttft)}' style='position:absolute;left:{left(turn.ttft)};top:0;width:2px;height:18px;background:#1565c0'></div>")
    return (
        "<div style='position:relative;height:18px;margin:6px 0;background:var(--jp-layout-color2,#eee);border-radius:3px'>"
        + "".join(marks)
        + "</div>"
        f"<div style='display:flex;justify-content:space-between;{_MUTED}'><span>0</span>"
        "<span>▮ tool · <span style='color:#1565c0'>|</span> first token · <span style='color:#ef6c00'>|</span> parked</span>"
        f"<span>{_ms(turn.duration or end)}</span></div>"
    )


def _event_rows(turn: Turn) -> str:
    """Render the events as table rows, folding each run of tokens into one row."""
    rows = []
    run: list[Any] = []

    def flush() -> None:
        if run:
            text = "".join(str(e.frame.get("token", "")) for e in run)
            rows.append((run[0].at, f"stream_token × {len(run)}", repr(_short(text, 100))))
            run.clear()

    for event in turn.events:
        if event.type == "stream_token":
            run.append(event)
            continue
        flush()
        data = event.frame.get("data") if isinstance(event.frame.get("data"), dict) else {}
        if event.type == "stream_chunk":
            detail = _short((data.get("state") or {}).get("rawResponse"), 160)
        elif event.type == "error":
            error = event.frame.get("error") or {}
            detail = f"{error.get('code')}: {error.get('message')}"
        elif event.type in ("write_confirmation_required", "interaction_required", "interaction_invalid"):
            detail = _short(data.get("data"), 160)
        else:
            detail = str(event.frame.get("status", ""))
        rows.append((event.at, event.type, detail))
    flush()
    return "".join(
        f"<tr><td style='text-align:right;padding-right:8px;white-space:nowrap;{_MUTED}'>{_ms(at)}</td>"
        f"<td style='padding-right:8px'><code>{_esc(kind)}</code></td><td>{_esc(detail)}</td></tr>"
        for at, kind, detail in rows
    )


def turn_html(turn: Turn) -> str:
    usage = turn.usage or {}
    tokens = f"{usage.get('promptTokens')} in / {usage.get('completionTokens')} out" if usage else "–"
    header = (
        f"<div>{_badge(turn.status)} <strong>{_esc(turn.message)}</strong></div>"
        f"<div style='{_MUTED}'>ttft {_ms(turn.ttft)} · total {_ms(turn.duration)} · tokens {tokens} · "
        f"{len(turn.events)} events · {len(turn.llm_requests)} model calls</div>"
    )
    body = f"<div style='white-space:pre-wrap;margin:6px 0'>{_esc(turn.text)}</div>"
    if turn.error:
        body += f"<div style='color:#c62828'>{_esc(turn.error['code'])}: {_esc(turn.error['message'])}</div>"
    if turn.pending:
        what = turn.pending.get("tool") or turn.pending.get("interaction")
        body += f"<div style='color:#ef6c00'>waiting for {_esc(turn.pending['kind'])}: {_esc(what)}</div>"
    tools = "".join(
        f"<li><code>{_esc(c.name)}</code>({_esc(_short(c.arguments, 80))}) → "
        f"<span style='color:{'#c62828' if c.is_error else 'inherit'}'>{_esc(_short(c.result or '', 120))}</span>"
        f" <span style='{_MUTED}'>{_ms(c.duration)}</span>"
        + (f"<details><summary>traceback</summary><pre>{_esc(c.traceback)}</pre></details>" if c.traceback else "")
        + "</li>"
        for c in turn.tool_calls
    )
    if tools:
        body += f"<div>tools:</div><ul style='margin:2px 0 6px 18px;padding:0'>{tools}</ul>"
    if turn.citations:
        cited = ", ".join(f"<code>{_esc(c.get('id'))}</code> ({c.get('score')})" for c in turn.citations)
        body += f"<div>cited: {cited}</div>"
    calls = "".join(
        f"<li>{len(call.messages)} messages, {len(call.tools)} tools → "
        + (f"tool call {_esc(call.tool_calls[0]['name'])}" if call.tool_calls else _esc(repr(_short(call.text, 80))))
        + f" <span style='{_MUTED}'>{_ms(call.duration)}</span></li>"
        for call in turn.llm_requests
    )
    details = (
        f"<details><summary>events</summary><table style='border-collapse:collapse;font-size:12px'>{_event_rows(turn)}</table></details>"
        + (f"<details><summary>model calls</summary><ol style='margin:2px 0 2px 18px;padding:0'>{calls}</ol></details>" if calls else "")
    )
    return f"<div style='{_FONT};max-width:860px'>{header}{_timeline_bar(turn)}{body}{details}</div>"


class Comparison:
    """Two turns side by side: text, tools, tokens and time."""

    def __init__(self, a: Turn, b: Turn) -> None:
        from smooth_nb.notebook.turn import Turn

        for label, value in (("a", a), ("b", b)):
            if not isinstance(value, Turn):
                raise TypeError(f"compare() takes two turns; {label} is a {type(value).__name__}, not the Turn that chat.send returns")
        self.a = a
        self.b = b

    def rows(self) -> list[tuple[str, str, str]]:
        def tools(turn: Turn) -> str:
            return ", ".join(f"{c.name}{' (error)' if c.is_error else ''}" for c in turn.tool_calls) or "none"

        def tokens(turn: Turn) -> str:
            usage = turn.usage or {}
            return f"{usage.get('promptTokens')} / {usage.get('completionTokens')}" if usage else "–"

        return [
            ("message", self.a.message, self.b.message),
            ("status", self.a.status, self.b.status),
            ("text", self.a.text, self.b.text),
            ("tools", tools(self.a), tools(self.b)),
            ("cited", ", ".join(str(c.get("id")) for c in self.a.citations) or "none", ", ".join(str(c.get("id")) for c in self.b.citations) or "none"),
            ("tokens in / out", tokens(self.a), tokens(self.b)),
            ("model calls", str(len(self.a.llm_requests)), str(len(self.b.llm_requests))),
            ("first token", _ms(self.a.ttft), _ms(self.b.ttft)),
            ("total", _ms(self.a.duration), _ms(self.b.duration)),
        ]

    def __repr__(self) -> str:
        width = max(len(name) for name, _, _ in self.rows())
        lines = []
        for name, left, right in self.rows():
            marker = "≠ " if _differs(name, left, right) else "  "
            lines.append(f"{marker}{name:<{width}}  {_short(left, 50):<50}  {_short(right, 50)}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        cells = []
        for name, left, right in self.rows():
            style = "background:rgba(239,108,0,.12);" if _differs(name, left, right) else ""
            cells.append(
                f"<tr style='{style}'><th style='text-align:left;padding:3px 8px;vertical-align:top;white-space:nowrap'>{_esc(name)}</th>"
                f"<td style='padding:3px 8px;white-space:pre-wrap;vertical-align:top'>{_esc(left)}</td>"
                f"<td style='padding:3px 8px;white-space:pre-wrap;vertical-align:top'>{_esc(right)}</td></tr>"
            )
        head = "<tr><th></th><th style='text-align:left;padding:3px 8px'>A</th><th style='text-align:left;padding:3px 8px'>B</th></tr>"
        return f"<table style='{_FONT};border-collapse:collapse;max-width:960px'>{head}{''.join(cells)}</table>"


def _differs(name: str, left: str, right: str) -> bool:
    # Timings differ on every run, so they are shown but never marked.
    return left != right and name not in ("first token", "total")


def compare(a: Turn, b: Turn) -> Comparison:
    """Show two turns side by side (text, tools, citations, tokens, time); rows that differ are marked."""
    return Comparison(a, b)
