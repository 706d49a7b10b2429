"""The inline chat widget: an anywidget over the same script the server's ``/`` page loads.

The front-end code is ``smooth_nb/static/chat-widget.iife.js``, our own small
UI. In a front-end with ipywidgets it renders as a widget; elsewhere the
``text/html`` fallback mounts the same script from an inline ``<script>``.
"""

from __future__ import annotations

import html
import json
import logging
import uuid
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import anywidget
import traitlets

from smooth_nb.server.http import widget_script

logger = logging.getLogger(__name__)

_RENDER = """
// The server accepts WebSockets only from origins it knows. The kernel learns
// this page's origin through the widget's comm, then sets origin_ok.
function announceOrigin(model) {
  const origin = globalThis.location ? globalThis.location.origin : "null";
  if (!origin || origin === "null" || model.get("origin_ok")) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { model.off("change:origin_ok", done); resolve(); };
    model.on("change:origin_ok", done);
    // NOTE: a kernel that is busy running a cell answers late; after 3 s the chat
    // connects anyway, and the server rejects it unless the origin was allowed.
    setTimeout(done, 3000);
    model.set("page_origin", origin);
    model.save_changes();
  });
}

export default {
  async render({ model, el }) {
    await announceOrigin(model);
    const handle = globalThis.SmoothNbChat.mount(el, {
      wsUrl: model.get("ws_url"),
      token: model.get("token") || null,
      notice: model.get("notice") || null,
      title: model.get("title") || undefined,
    });
    return () => handle.destroy();
  },
};
"""


@lru_cache(maxsize=1)
def _module_source() -> str:
    return widget_script() + "\n" + _RENDER


class ChatWidget(anywidget.AnyWidget):
    """A chat connected to a smooth-operator server's ``ws_url``."""

    ws_url = traitlets.Unicode().tag(sync=True)
    token = traitlets.Unicode(allow_none=True, default_value=None).tag(sync=True)
    notice = traitlets.Unicode(allow_none=True, default_value=None).tag(sync=True)
    title = traitlets.Unicode("smooth-nb chat").tag(sync=True)
    #: Set by the front-end to the origin of the page showing the widget.
    page_origin = traitlets.Unicode("").tag(sync=True)
    #: Set once the server accepts that origin.
    origin_ok = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self,
        ws_url: str,
        *,
        token: str | None = None,
        notice: str | None = None,
        allow_origin: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(_esm=_module_source(), ws_url=ws_url, token=token, notice=notice, **kwargs)
        self._allow_origin = allow_origin

    @traitlets.observe("page_origin")
    def _page_origin_changed(self, change: dict[str, Any]) -> None:
        origin = change["new"]
        if not origin or self._allow_origin is None:
            return
        try:
            self._allow_origin(origin)
        except ValueError:
            logger.warning("the chat widget reported an invalid page origin %r", origin[:200])
            return
        self.origin_ok = True

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            data["text/html"] = fallback_html(self.ws_url, token=self.token, notice=self.notice)
        return bundle


def fallback_html(ws_url: str, *, token: str | None = None, notice: str | None = None) -> str:
    """Render the chat as plain HTML with an inline script, for front-ends without widgets."""
    element_id = f"smooth-nb-chat-{uuid.uuid4().hex}"
    options = json.dumps({"wsUrl": ws_url, "token": token, "notice": notice}).replace("</", "<\\/")
    script = widget_script().replace("</script", "<\\/script")
    return (
        f'<div id="{html.escape(element_id)}"></div>\n'
        f"<script>{script}\n"
        f"globalThis.SmoothNbChat.mount(document.getElementById({json.dumps(element_id)}), {options});</script>"
    )
