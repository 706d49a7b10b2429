"""The inline chat widget: an anywidget over the same script the server's ``/`` page loads.

The front-end code is ``smooth_nb/static/chat-widget.iife.js``, our own small
UI. In a front-end with ipywidgets it renders as a widget; elsewhere the
``text/html`` fallback mounts the same script from an inline ``<script>``.
"""

from __future__ import annotations

import html
import json
import uuid
from functools import lru_cache
from typing import Any

import anywidget
import traitlets

from smooth_nb.server.http import widget_script

_RENDER = """
export default {
  render({ model, el }) {
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

    def __init__(self, ws_url: str, *, token: str | None = None, notice: str | None = None, **kwargs: Any) -> None:
        super().__init__(_esm=_module_source(), ws_url=ws_url, token=token, notice=notice, **kwargs)

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
