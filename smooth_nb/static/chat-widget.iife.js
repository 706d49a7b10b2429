/*
 * smooth-nb chat widget: a dependency-free chat UI for a smooth-operator
 * agent server, spoken to over its JSON-over-WebSocket protocol.
 *
 * The file defines globalThis.SmoothNbChat = { version, mount(element, options) }
 * and nothing else global. It is one IIFE in strict mode that needs no
 * document.currentScript, so it runs unchanged as a classic <script> and as
 * the head of an ES module (the notebook side appends `export default {...}`).
 *
 * Guarantees:
 * - Server and model text reaches the DOM only through textContent or
 *   attributes, never as markup. Citation links accept http(s) URLs only.
 * - Socket and DOM event handlers catch their own errors, and frame types this
 *   widget does not know are ignored.
 * - mount() returns { destroy() }, which closes the socket and removes every
 *   element this mount added (the shared <style> goes with the last mount).
 */
(function () {
  "use strict";

  const VERSION = "0.1.0";
  const DEFAULT_AGENT_ID = "00000000-0000-4000-8000-000000000001";
  const DEFAULT_TITLE = "smooth-nb chat";
  const DEFAULT_LIST_HEIGHT = "320px";
  const STYLE_ELEMENT_ID = "smooth-nb-chat-style";
  const MAX_TOOL_TEXT_CHARS = 200;
  const MAX_TOOLTIP_CHARS = 2000;
  // The list follows new content only while the reader is this close to the
  // bottom, so scrolling up to reread is not undone by the next token.
  const FOLLOW_THRESHOLD_PX = 48;
  // A server that never sends `cancelled` after a cancel would leave the turn
  // running forever, so the widget ends the turn itself after this long.
  // NOTE: 10 s is a guess, not measured against a real server.
  const CANCEL_FALLBACK_MS = 10000;
  const MAX_INTERNAL_WARNINGS = 5;

  const STATUS_TEXT = {
    connecting: "connecting…",
    connected: "connected",
    serverGone: "disconnected — the server is gone",
    noSession: "disconnected — could not create a session",
    socketFailed: "disconnected — could not open the WebSocket",
    // Browsers hide the HTTP status of a refused handshake, so 401 and 403 look alike.
    refused: "disconnected — could not connect: the server is not running, the token is wrong, or this page's origin is not allowed",
  };

  const CONFIRMATION_OUTCOME_TEXT = {
    approved: "✓ Approved",
    denied: "✗ Denied",
    expired: "No longer pending: the turn ended.",
  };

  // ---------------------------------------------------------------------
  // Small helpers
  // ---------------------------------------------------------------------

  let requestCounter = 0;
  let internalWarningCount = 0;

  function newRequestId() {
    const cryptoApi = globalThis.crypto;
    if (cryptoApi && typeof cryptoApi.randomUUID === "function") {
      try {
        return cryptoApi.randomUUID();
      } catch (error) {
        // randomUUID exists but throws outside secure contexts in some
        // browsers, so fall through to the counter.
      }
    }
    requestCounter += 1;
    const randomPart = Math.random().toString(36).slice(2, 10);
    return "snb-" + Date.now().toString(36) + "-" + requestCounter + "-" + randomPart;
  }

  // Bugs in this file should be visible to a developer without flooding the
  // console of a notebook that streams thousands of frames.
  function warnInternal(context, error) {
    if (internalWarningCount >= MAX_INTERNAL_WARNINGS) {
      return;
    }
    internalWarningCount += 1;
    if (globalThis.console && typeof globalThis.console.warn === "function") {
      globalThis.console.warn("smooth-nb chat: " + context + " failed", error);
    }
  }

  function guard(context, handler) {
    return function guardedHandler() {
      try {
        return handler.apply(this, arguments);
      } catch (error) {
        warnInternal(context, error);
        return undefined;
      }
    };
  }

  function createElement(tagName, className, text) {
    const element = document.createElement(tagName);
    if (className) {
      element.className = className;
    }
    if (text !== undefined && text !== null) {
      element.textContent = String(text);
    }
    return element;
  }

  function truncate(text, maxChars) {
    if (text.length <= maxChars) {
      return text;
    }
    return text.slice(0, maxChars - 1) + "…";
  }

  // Tool arguments and results may be strings, JSON values or absent.
  function describeValue(value) {
    if (value === undefined || value === null) {
      return "";
    }
    if (typeof value === "string") {
      return value;
    }
    try {
      return JSON.stringify(value);
    } catch (error) {
      return String(value);
    }
  }

  function isObject(value) {
    return value !== null && typeof value === "object";
  }

  function isFiniteNumber(value) {
    return typeof value === "number" && Number.isFinite(value);
  }

  function frameRequestId(frame) {
    if (typeof frame.requestId === "string") {
      return frame.requestId;
    }
    if (isObject(frame.data) && typeof frame.data.requestId === "string") {
      return frame.data.requestId;
    }
    return null;
  }

  // Resolves a relative URL against the page and maps http(s) to ws(s), so a
  // caller may pass a proxied path such as "/proxy/8765/ws". Throws TypeError
  // for an invalid URL or another scheme.
  function buildSocketUrl(wsUrl, token) {
    const url = new URL(wsUrl, globalThis.location ? globalThis.location.href : undefined);
    if (url.protocol === "http:") {
      url.protocol = "ws:";
    } else if (url.protocol === "https:") {
      url.protocol = "wss:";
    }
    if (url.protocol !== "ws:" && url.protocol !== "wss:") {
      throw new TypeError("wsUrl must be a ws:, wss:, http: or https: URL, got " + url.protocol);
    }

    let href = url.href;
    if (token !== undefined && token !== null && token !== "") {
      const hashIndex = href.indexOf("#");
      const fragment = hashIndex >= 0 ? href.slice(hashIndex) : "";
      const base = hashIndex >= 0 ? href.slice(0, hashIndex) : href;
      let separator = "?";
      if (base.indexOf("?") >= 0) {
        separator = base.endsWith("?") || base.endsWith("&") ? "" : "&";
      }
      href = base + separator + "token=" + encodeURIComponent(String(token)) + fragment;
    }
    return href;
  }

  // Returns the URL when it is safe to put in an href, else null, because a
  // "javascript:" URL from a knowledge-base document would run on click.
  function safeLinkUrl(rawUrl) {
    if (typeof rawUrl !== "string" || rawUrl === "") {
      return null;
    }
    try {
      const url = new URL(rawUrl, globalThis.location ? globalThis.location.href : undefined);
      if (url.protocol === "http:" || url.protocol === "https:") {
        return url.href;
      }
    } catch (error) {
      // Not a URL, so the citation is shown as plain text.
    }
    return null;
  }

  // ---------------------------------------------------------------------
  // Stylesheet, shared by every mount in a document
  // ---------------------------------------------------------------------

  const STYLESHEET = `
.snb-root {
  font-family: var(--jp-ui-font-family, system-ui, -apple-system, "Segoe UI", sans-serif);
  --snb-font-size: var(--jp-ui-font-size1, 13px);
  --snb-font-size-small: calc(var(--jp-ui-font-size1, 13px) * 0.85);
  font-size: var(--snb-font-size);
  line-height: 1.45;
  color: var(--jp-ui-font-color1, #222);
  background: var(--jp-layout-color1, #fff);
  border: 1px solid var(--jp-border-color2, #ddd);
  border-radius: 8px;
  max-width: 720px;
  overflow: hidden;
  box-sizing: border-box;
  text-align: left;
}
.snb-root *, .snb-root *::before, .snb-root *::after { box-sizing: border-box; }
.snb-header {
  display: flex;
  align-items: center;
  gap: 8px;
  min-height: 38px;
  padding: 4px 8px 4px 12px;
  background: var(--jp-layout-color2, #f5f5f5);
  border-bottom: 1px solid var(--jp-border-color2, #ddd);
}
.snb-title {
  flex: 1 1 auto;
  min-width: 0;
  font-weight: 600;
  white-space: nowrap;
  overflow: hidden;
  text-overflow: ellipsis;
}
.snb-status-area {
  display: flex;
  align-items: center;
  gap: 6px;
  flex: 0 1 auto;
  min-width: 0;
  font-size: var(--snb-font-size-small);
  color: var(--jp-ui-font-color2, #666);
}
.snb-status { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.snb-status-dot {
  flex: 0 0 auto;
  width: 8px;
  height: 8px;
  border-radius: 50%;
  background: var(--jp-warn-color1, #f57c00);
}
.snb-root[data-state="connecting"] .snb-status-dot { animation: snb-pulse 1.2s ease-in-out infinite; }
.snb-root[data-state="connected"] .snb-status-dot { background: var(--jp-success-color1, #388e3c); }
.snb-root[data-state="disconnected"] .snb-status-dot { background: var(--jp-error-color1, #d32f2f); }
.snb-root[data-state="disconnected"] .snb-status { color: var(--jp-error-color1, #d32f2f); }
.snb-notice {
  margin: 0;
  padding: 7px 12px;
  white-space: pre-wrap;
  overflow-wrap: anywhere;
  font-size: var(--snb-font-size-small);
  color: var(--jp-ui-font-color2, #555);
  background: var(--jp-layout-color2, #f7f7f7);
  border-bottom: 1px solid var(--jp-border-color2, #ddd);
  border-left: 3px solid var(--jp-warn-color1, #f57c00);
}
.snb-messages {
  display: flex;
  flex-direction: column;
  gap: 8px;
  padding: 12px;
  overflow-y: auto;
  resize: vertical;
  min-height: 120px;
}
.snb-empty {
  margin: auto;
  color: var(--jp-ui-font-color3, #999);
  font-size: var(--snb-font-size);
}
.snb-message {
  max-width: 85%;
  padding: 7px 11px;
  border-radius: 12px;
  overflow-wrap: anywhere;
}
.snb-text { white-space: pre-wrap; }
.snb-text:empty { display: none; }
.snb-message-user {
  align-self: flex-end;
  color: var(--jp-ui-inverse-font-color0, #fff);
  background: var(--jp-brand-color1, #1976d2);
  border-bottom-right-radius: 4px;
}
.snb-message-assistant {
  align-self: flex-start;
  background: var(--jp-layout-color2, #f1f3f5);
  border: 1px solid var(--jp-border-color3, #e6e6e6);
  border-bottom-left-radius: 4px;
}
.snb-message-error {
  align-self: flex-start;
  color: var(--jp-error-color1, #d32f2f);
  background: var(--jp-layout-color1, #fff);
  border: 1px solid var(--jp-error-color1, #d32f2f);
  border-left-width: 3px;
  border-radius: 6px;
}
.snb-error-code { font-weight: 600; }
.snb-divider {
  align-self: center;
  font-size: var(--snb-font-size-small);
  color: var(--jp-ui-font-color3, #999);
}
.snb-activity:empty { display: none; }
.snb-activity {
  display: flex;
  flex-direction: column;
  gap: 2px;
  margin-bottom: 4px;
}
.snb-tool {
  font-family: var(--jp-code-font-family, ui-monospace, SFMono-Regular, Menlo, monospace);
  font-size: var(--snb-font-size-small);
  color: var(--jp-ui-font-color2, #666);
  white-space: pre-wrap;
}
.snb-tool-result { padding-left: 1em; }
.snb-tool-error { color: var(--jp-error-color1, #d32f2f); }
.snb-confirm {
  margin: 4px 0;
  padding: 7px 9px;
  border: 1px solid var(--jp-warn-color1, #f57c00);
  border-radius: 6px;
  background: var(--jp-layout-color1, #fff);
}
.snb-confirm-title { font-weight: 600; font-size: var(--snb-font-size-small); }
.snb-confirm-text { white-space: pre-wrap; margin: 2px 0 6px; }
.snb-confirm-actions { display: flex; align-items: center; gap: 6px; }
.snb-confirm-outcome { font-size: var(--snb-font-size-small); font-weight: 600; color: var(--jp-ui-font-color2, #666); }
.snb-confirm-outcome[data-outcome="approved"] { color: var(--jp-success-color1, #388e3c); }
.snb-confirm-outcome[data-outcome="denied"] { color: var(--jp-error-color1, #d32f2f); }
.snb-typing { display: inline-flex; gap: 3px; padding: 4px 0; }
.snb-typing[hidden] { display: none; }
.snb-typing span {
  width: 6px;
  height: 6px;
  border-radius: 50%;
  background: var(--jp-ui-font-color3, #999);
  animation: snb-pulse 1s ease-in-out infinite;
}
.snb-typing span:nth-child(2) { animation-delay: 0.15s; }
.snb-typing span:nth-child(3) { animation-delay: 0.3s; }
.snb-note {
  margin-top: 3px;
  font-size: var(--snb-font-size-small);
  font-style: italic;
  color: var(--jp-ui-font-color2, #666);
}
.snb-sources {
  margin-top: 6px;
  padding-top: 5px;
  border-top: 1px solid var(--jp-border-color2, #ddd);
  font-size: var(--snb-font-size-small);
}
.snb-sources-title {
  font-weight: 600;
  color: var(--jp-ui-font-color2, #666);
  text-transform: uppercase;
  letter-spacing: 0.04em;
}
.snb-source-list { margin: 2px 0 0; padding-left: 1.4em; }
.snb-source { margin: 2px 0; }
.snb-source-label { font-weight: 500; }
a.snb-source-label { color: var(--jp-content-link-color, #1976d2); text-decoration: none; }
a.snb-source-label:hover { text-decoration: underline; }
.snb-source-snippet {
  color: var(--jp-ui-font-color2, #666);
  display: -webkit-box;
  -webkit-box-orient: vertical;
  -webkit-line-clamp: 2;
  overflow: hidden;
}
.snb-usage {
  margin-top: 4px;
  text-align: right;
  font-size: calc(var(--snb-font-size-small) * 0.9);
  color: var(--jp-ui-font-color3, #999);
}
.snb-composer {
  display: flex;
  align-items: flex-end;
  gap: 8px;
  padding: 8px 12px;
  border-top: 1px solid var(--jp-border-color2, #ddd);
  background: var(--jp-layout-color1, #fff);
}
.snb-input {
  flex: 1 1 auto;
  min-width: 0;
  min-height: 34px;
  max-height: 160px;
  padding: 7px 9px;
  resize: none;
  font: inherit;
  color: var(--jp-ui-font-color1, #222);
  background: var(--jp-input-background, var(--jp-layout-color1, #fff));
  border: 1px solid var(--jp-border-color1, #ccc);
  border-radius: 6px;
  outline: none;
}
.snb-input:focus { border-color: var(--jp-brand-color1, #1976d2); }
.snb-input:disabled { opacity: 0.6; cursor: not-allowed; }
.snb-button {
  flex: 0 0 auto;
  height: 30px;
  padding: 0 12px;
  font: inherit;
  font-weight: 500;
  color: var(--jp-ui-font-color1, #222);
  background: var(--jp-layout-color2, #f0f0f0);
  border: 1px solid var(--jp-border-color1, #ccc);
  border-radius: 6px;
  cursor: pointer;
}
.snb-button:hover:not(:disabled) { filter: brightness(0.95); }
.snb-button:disabled { opacity: 0.5; cursor: not-allowed; }
.snb-button[hidden] { display: none; }
.snb-button-primary {
  color: var(--jp-ui-inverse-font-color0, #fff);
  background: var(--jp-brand-color1, #1976d2);
  border-color: var(--jp-brand-color1, #1976d2);
}
.snb-button-danger {
  color: var(--jp-error-color1, #d32f2f);
  border-color: var(--jp-error-color1, #d32f2f);
  background: transparent;
}
.snb-button-small { height: 24px; padding: 0 10px; font-size: var(--snb-font-size-small); }
.snb-composer .snb-button { height: 34px; }
@keyframes snb-pulse { 0%, 100% { opacity: 0.35; } 50% { opacity: 1; } }
`;

  // The mount count lives on the <style> element rather than in this closure,
  // because a notebook may evaluate this file several times.
  function acquireStylesheet(doc) {
    let style = doc.getElementById(STYLE_ELEMENT_ID);
    if (style && style.getAttribute("data-version") !== VERSION) {
      style.remove();
      style = null;
    }
    if (!style) {
      style = doc.createElement("style");
      style.id = STYLE_ELEMENT_ID;
      style.setAttribute("data-version", VERSION);
      style.setAttribute("data-mounts", "0");
      style.textContent = STYLESHEET;
      (doc.head || doc.documentElement).appendChild(style);
    }
    const mounts = Number(style.getAttribute("data-mounts")) || 0;
    style.setAttribute("data-mounts", String(mounts + 1));
  }

  function releaseStylesheet(doc) {
    const style = doc.getElementById(STYLE_ELEMENT_ID);
    if (!style) {
      return;
    }
    const mounts = (Number(style.getAttribute("data-mounts")) || 1) - 1;
    if (mounts <= 0) {
      style.remove();
    } else {
      style.setAttribute("data-mounts", String(mounts));
    }
  }

  // ---------------------------------------------------------------------
  // One mounted chat
  // ---------------------------------------------------------------------

  function mount(element, options) {
    if (!element || typeof element.appendChild !== "function") {
      throw new TypeError("SmoothNbChat.mount: element must be a DOM element, got " + String(element));
    }
    const settings = isObject(options) ? options : {};
    if (typeof settings.wsUrl !== "string" || settings.wsUrl.trim() === "") {
      throw new TypeError("SmoothNbChat.mount: options.wsUrl is required (a ws:// or wss:// URL)");
    }

    const wsUrl = settings.wsUrl.trim();
    const token = typeof settings.token === "string" ? settings.token : null;
    const agentId = typeof settings.agentId === "string" && settings.agentId !== "" ? settings.agentId : DEFAULT_AGENT_ID;
    const title = typeof settings.title === "string" && settings.title !== "" ? settings.title : DEFAULT_TITLE;
    const notice = typeof settings.notice === "string" && settings.notice !== "" ? settings.notice : null;
    const listHeight = typeof settings.height === "string" && settings.height !== "" ? settings.height : DEFAULT_LIST_HEIGHT;

    const doc = element.ownerDocument || document;
    acquireStylesheet(doc);

    const view = buildView(title, notice, listHeight);
    element.appendChild(view.root);

    let socket = null;
    let session = null;
    let sessionRequestId = null;
    let activeTurn = null;
    let connectionState = "connecting";
    let followNewest = true;
    let destroyed = false;

    // --- connection ---

    function connect() {
      session = null;
      sessionRequestId = null;
      setConnectionState("connecting", STATUS_TEXT.connecting);

      let socketUrl;
      let ws;
      try {
        socketUrl = buildSocketUrl(wsUrl, token);
        ws = new WebSocket(socketUrl);
      } catch (error) {
        const reason = error && error.message ? error.message : String(error);
        showError("CONNECT_FAILED", "Could not open a WebSocket to options.wsUrl: " + reason);
        setConnectionState("disconnected", STATUS_TEXT.socketFailed);
        return;
      }
      socket = ws;

      let opened = false;
      ws.onopen = guard("socket open", function () {
        if (ws !== socket) {
          return;
        }
        opened = true;
        sessionRequestId = newRequestId();
        sendFrame({ action: "create_conversation_session", requestId: sessionRequestId, agentId: agentId });
      });
      ws.onmessage = guard("frame handling", function (event) {
        if (ws !== socket || typeof event.data !== "string") {
          return;
        }
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch (error) {
          return; // Not JSON, so not a protocol frame.
        }
        if (isObject(frame)) {
          handleFrame(frame);
        }
      });
      ws.onerror = guard("socket error", function () {
        loseSocket(ws, "", opened);
      });
      ws.onclose = guard("socket close", function (event) {
        loseSocket(ws, event && event.reason ? event.reason : "", opened);
      });
    }

    function detachSocket() {
      const ws = socket;
      socket = null;
      if (!ws) {
        return;
      }
      ws.onopen = null;
      ws.onmessage = null;
      ws.onerror = null;
      ws.onclose = null;
      try {
        ws.close(1000);
      } catch (error) {
        // Closing an already closed socket is harmless.
      }
    }

    function loseSocket(ws, closeReason, opened) {
      if (ws !== socket) {
        return;
      }
      detachSocket();
      session = null;
      if (activeTurn) {
        finishTurn(activeTurn, "interrupted: the connection closed");
      }
      const base = opened ? STATUS_TEXT.serverGone : STATUS_TEXT.refused;
      const statusText = closeReason ? base + " (" + closeReason + ")" : base;
      setConnectionState("disconnected", statusText);
    }

    function reconnect() {
      detachSocket();
      if (view.list.querySelector(".snb-message")) {
        appendToList(createElement("div", "snb-divider", "new session"));
      }
      connect();
    }

    function sendFrame(frame) {
      if (!socket || socket.readyState !== WebSocket.OPEN) {
        return false;
      }
      socket.send(JSON.stringify(frame));
      return true;
    }

    function setConnectionState(state, statusText) {
      connectionState = state;
      view.root.setAttribute("data-state", state);
      view.status.textContent = statusText;
      view.status.title = statusText;
      updateControls();
    }

    // --- incoming frames ---

    function handleFrame(frame) {
      switch (frame.type) {
        case "immediate_response":
          onImmediateResponse(frame);
          break;
        case "stream_token":
          onStreamToken(frame);
          break;
        case "stream_chunk":
          onStreamChunk(frame);
          break;
        case "eventual_response":
          onEventualResponse(frame);
          break;
        case "write_confirmation_required":
          onWriteConfirmationRequired(frame);
          break;
        case "cancelled":
          onCancelled(frame);
          break;
        case "error":
          onErrorFrame(frame);
          break;
        default:
          // keepalive, pong and event types newer than this widget.
          break;
      }
    }

    // A connection runs one turn at a time, so a frame without a requestId
    // belongs to the running turn. Frames of an earlier turn are dropped.
    function turnForFrame(frame) {
      if (!activeTurn) {
        return null;
      }
      const requestId = frameRequestId(frame);
      if (requestId === null || requestId === activeTurn.requestId) {
        return activeTurn;
      }
      return null;
    }

    function onImmediateResponse(frame) {
      const requestId = frameRequestId(frame);
      const status = isFiniteNumber(frame.status) ? frame.status : 200;
      const data = isObject(frame.data) ? frame.data : {};

      if (requestId !== null && requestId === sessionRequestId) {
        sessionRequestId = null;
        if (status >= 200 && status < 300 && typeof data.sessionId === "string") {
          openSession(data);
        } else {
          const message = typeof frame.message === "string" && frame.message ? frame.message : "The server did not return a session.";
          failSession("HTTP_" + status, message);
        }
        return;
      }

      const turn = turnForFrame(frame);
      if (turn && requestId !== null && status >= 400) {
        const message = typeof frame.message === "string" && frame.message ? frame.message : "The server rejected the message.";
        showError("HTTP_" + status, message);
        finishTurn(turn, "failed");
      }
    }

    function openSession(data) {
      session = {
        sessionId: data.sessionId,
        agentName: typeof data.agentName === "string" ? data.agentName : "",
      };
      const statusText = session.agentName ? STATUS_TEXT.connected + " · " + session.agentName : STATUS_TEXT.connected;
      setConnectionState("connected", statusText);
    }

    function failSession(code, message) {
      showError(code, message);
      // A socket without a session cannot send messages, so it is closed and
      // the Reconnect button offers the retry.
      detachSocket();
      setConnectionState("disconnected", STATUS_TEXT.noSession);
    }

    function onStreamToken(frame) {
      const turn = turnForFrame(frame);
      if (!turn) {
        return;
      }
      let piece = frame.token;
      if (typeof piece !== "string" && isObject(frame.data)) {
        piece = frame.data.token;
      }
      if (typeof piece !== "string" || piece === "") {
        return;
      }
      turn.streamedText += piece;
      turn.textNode.appendData(piece);
      turn.typing.hidden = true;
      revealNewest();
    }

    function onStreamChunk(frame) {
      const turn = turnForFrame(frame);
      if (!turn || !isObject(frame.data) || !isObject(frame.data.state)) {
        return;
      }
      const rawResponse = frame.data.state.rawResponse;
      if (!isObject(rawResponse)) {
        return; // Other node snapshots (e.g. knowledge_search) are not shown.
      }
      if (isObject(rawResponse.toolCall)) {
        addToolCallLine(turn, rawResponse.toolCall);
      }
      if (isObject(rawResponse.toolResult)) {
        addToolResultLine(turn, rawResponse.toolResult);
      }
    }

    function addToolCallLine(turn, toolCall) {
      const name = typeof toolCall.name === "string" && toolCall.name ? toolCall.name : "tool";
      const fullText = "🔧 " + name + "(" + describeValue(toolCall.arguments) + ")";
      const line = createElement("div", "snb-tool snb-tool-call", truncate(fullText, MAX_TOOL_TEXT_CHARS));
      line.title = truncate(fullText, MAX_TOOLTIP_CHARS);
      turn.activity.appendChild(line);
      revealNewest();
    }

    function addToolResultLine(turn, toolResult) {
      const resultValue = toolResult.result !== undefined ? toolResult.result : toolResult.content;
      const fullText = "↳ " + describeValue(resultValue);
      const line = createElement("div", "snb-tool snb-tool-result", truncate(fullText, MAX_TOOL_TEXT_CHARS));
      line.title = truncate(fullText, MAX_TOOLTIP_CHARS);
      if (toolResult.isError === true) {
        line.classList.add("snb-tool-error");
        line.setAttribute("data-error", "true");
      }
      turn.activity.appendChild(line);
      revealNewest();
    }

    function onWriteConfirmationRequired(frame) {
      const turn = turnForFrame(frame);
      if (!turn) {
        return;
      }
      const details = isObject(frame.data) && isObject(frame.data.data) ? frame.data.data : {};
      let description = "The agent wants to run a tool that changes data.";
      if (typeof details.actionDescription === "string" && details.actionDescription) {
        description = details.actionDescription;
      } else if (typeof details.toolId === "string" && details.toolId) {
        description = "The agent wants to run " + details.toolId + ".";
      }
      // The server matches confirm_tool_action to its paused workflow by this requestId.
      const replyRequestId = frameRequestId(frame) || turn.requestId;

      const card = createElement("div", "snb-confirm");
      card.appendChild(createElement("div", "snb-confirm-title", "Approval needed"));
      card.appendChild(createElement("div", "snb-confirm-text", description));
      const actions = createElement("div", "snb-confirm-actions");
      const approveButton = createButton("Approve", "snb-button snb-button-primary snb-button-small", "smooth-chat-approve");
      const denyButton = createButton("Deny", "snb-button snb-button-danger snb-button-small", "smooth-chat-deny");
      const outcome = createElement("span", "snb-confirm-outcome");
      actions.append(approveButton, denyButton, outcome);
      card.appendChild(actions);

      const confirmation = { approveButton: approveButton, denyButton: denyButton, outcome: outcome };
      turn.confirmations.push(confirmation);

      function answer(approved) {
        if (approveButton.disabled) {
          return;
        }
        const sent = sendFrame({
          action: "confirm_tool_action",
          requestId: replyRequestId,
          sessionId: session ? session.sessionId : "",
          approved: approved,
        });
        if (!sent) {
          return;
        }
        closeConfirmation(confirmation, approved ? "approved" : "denied");
      }
      approveButton.addEventListener("click", guard("approve click", function () { answer(true); }));
      denyButton.addEventListener("click", guard("deny click", function () { answer(false); }));

      turn.activity.appendChild(card);
      revealNewest();
    }

    // The buttons stay in the DOM, disabled and hidden, so the card keeps
    // its test hooks after the user decides.
    function closeConfirmation(confirmation, outcome) {
      if (confirmation.approveButton.disabled) {
        return;
      }
      confirmation.approveButton.disabled = true;
      confirmation.denyButton.disabled = true;
      confirmation.approveButton.hidden = true;
      confirmation.denyButton.hidden = true;
      confirmation.outcome.setAttribute("data-outcome", outcome);
      confirmation.outcome.textContent = CONFIRMATION_OUTCOME_TEXT[outcome];
    }

    function onEventualResponse(frame) {
      const turn = turnForFrame(frame);
      if (!turn) {
        return;
      }
      const outer = isObject(frame.data) ? frame.data : {};
      const result = isObject(outer.data) ? outer.data : {};

      const parts = responseParts(result.response);
      // A stream normally carries exactly the concatenated parts. When it does
      // not (nothing streamed, or the server corrected the text), the final
      // parts replace it. Parts of an unstreamed reply become paragraphs.
      if (parts.length > 0 && parts.join("") !== "" && parts.join("") !== turn.streamedText) {
        const finalText = turn.streamedText === "" ? parts.join("\n\n") : parts.join("");
        turn.textNode.data = finalText;
        turn.streamedText = finalText;
      }
      if (turn.streamedText === "") {
        addNote(turn, "(empty answer)");
      }
      if (Array.isArray(result.citations) && result.citations.length > 0) {
        turn.bubble.appendChild(buildSources(result.citations));
      }
      if (isObject(result.usage)) {
        const usageLine = describeUsage(result.usage);
        if (usageLine) {
          turn.bubble.appendChild(createElement("div", "snb-usage", usageLine));
        }
      }
      finishTurn(turn, null);
    }

    function responseParts(response) {
      if (typeof response === "string") {
        return [response];
      }
      if (isObject(response) && Array.isArray(response.responseParts)) {
        return response.responseParts.filter(function (part) { return typeof part === "string"; });
      }
      return [];
    }

    function describeUsage(usage) {
      const pieces = [];
      if (isFiniteNumber(usage.promptTokens)) {
        pieces.push(usage.promptTokens + " prompt");
      }
      if (isFiniteNumber(usage.completionTokens)) {
        pieces.push(usage.completionTokens + " completion");
      }
      let text = pieces.length > 0 ? pieces.join(" + ") + " tokens" : "";
      if (isFiniteNumber(usage.costUsd) && usage.costUsd > 0) {
        text += (text ? " · " : "") + "$" + usage.costUsd.toFixed(4);
      }
      return text;
    }

    function buildSources(citations) {
      const container = createElement("div", "snb-sources");
      container.appendChild(createElement("div", "snb-sources-title", "Sources"));
      const list = createElement("ol", "snb-source-list");
      for (const citation of citations) {
        if (!isObject(citation)) {
          continue;
        }
        list.appendChild(buildCitation(citation));
      }
      container.appendChild(list);
      return container;
    }

    function buildCitation(citation) {
      const sourceId = typeof citation.id === "string" ? citation.id : "";
      const label = (typeof citation.title === "string" && citation.title) || sourceId || "untitled source";
      const snippet = typeof citation.snippet === "string" ? citation.snippet : "";

      const item = createElement("li", "snb-source");
      item.setAttribute("data-testid", "smooth-chat-citation");
      item.setAttribute("data-source", sourceId);
      if (snippet) {
        item.title = snippet;
      }

      const href = safeLinkUrl(citation.url);
      let labelElement;
      if (href) {
        labelElement = createElement("a", "snb-source-label", label);
        labelElement.href = href;
        labelElement.target = "_blank";
        labelElement.rel = "noopener noreferrer";
      } else {
        labelElement = createElement("span", "snb-source-label", label);
      }
      item.appendChild(labelElement);
      if (snippet) {
        item.appendChild(createElement("div", "snb-source-snippet", snippet));
      }
      return item;
    }

    function onCancelled(frame) {
      const turn = turnForFrame(frame);
      if (turn) {
        finishTurn(turn, "cancelled");
      }
    }

    function onErrorFrame(frame) {
      const requestId = frameRequestId(frame);
      let details = isObject(frame.error) ? frame.error : null;
      if (!details && isObject(frame.data) && isObject(frame.data.error)) {
        details = frame.data.error;
      }
      details = details || {};
      const code = typeof details.code === "string" && details.code ? details.code : "ERROR";
      const message = typeof details.message === "string" && details.message ? details.message : "The server reported an error.";

      if (requestId !== null && requestId === sessionRequestId) {
        sessionRequestId = null;
        failSession(code, message);
        return;
      }

      showError(code, message);
      // An error without a requestId is not tied to the running turn, so the
      // turn keeps going.
      if (activeTurn && requestId !== null && requestId === activeTurn.requestId) {
        finishTurn(activeTurn, "failed");
      }
    }

    // --- turns ---

    function startTurn(text) {
      const requestId = newRequestId();
      followNewest = true;
      appendMessage("user", text);

      const assistant = appendMessage("assistant", "");
      const turn = {
        requestId: requestId,
        bubble: assistant.bubble,
        textNode: assistant.textNode,
        activity: assistant.activity,
        typing: assistant.typing,
        streamedText: "",
        confirmations: [],
        cancelTimer: null,
        stopRequested: false,
      };
      activeTurn = turn;
      updateControls();

      const sent = sendFrame({
        action: "send_message",
        requestId: requestId,
        sessionId: session.sessionId,
        message: text,
        stream: true,
      });
      if (!sent) {
        showError("NOT_CONNECTED", "The message was not sent because the connection is closed.");
        finishTurn(turn, "failed");
      }
    }

    function stopTurn() {
      const turn = activeTurn;
      if (!turn || turn.stopRequested) {
        return;
      }
      turn.stopRequested = true;
      updateControls();
      sendFrame({ action: "cancel", requestId: turn.requestId, sessionId: session ? session.sessionId : "" });
      turn.cancelTimer = setTimeout(guard("cancel fallback", function () {
        if (activeTurn === turn) {
          finishTurn(turn, "stopped (the server did not confirm the cancel)");
        }
      }), CANCEL_FALLBACK_MS);
    }

    // Ends the turn in the UI. A non-null note is shown in the bubble, which
    // marks turns that ended without a complete reply (failed, cancelled, lost).
    function finishTurn(turn, note) {
      if (turn.cancelTimer !== null) {
        clearTimeout(turn.cancelTimer);
        turn.cancelTimer = null;
      }
      turn.typing.hidden = true;
      for (const confirmation of turn.confirmations) {
        closeConfirmation(confirmation, "expired");
      }
      if (note) {
        addNote(turn, note);
      }
      turn.bubble.setAttribute("data-done", "true");
      if (activeTurn === turn) {
        activeTurn = null;
      }
      updateControls();
      revealNewest();
      if (view.root.contains(doc.activeElement) && !view.input.disabled) {
        view.input.focus();
      }
    }

    function addNote(turn, text) {
      turn.bubble.appendChild(createElement("div", "snb-note", text));
    }

    // --- DOM updates ---

    function appendMessage(role, text) {
      const bubble = createElement("div", "snb-message snb-message-" + role);
      bubble.setAttribute("data-testid", "smooth-chat-message");
      bubble.setAttribute("data-role", role);

      let activity = null;
      let typing = null;
      if (role === "assistant") {
        bubble.setAttribute("data-done", "false");
        activity = createElement("div", "snb-activity");
        bubble.appendChild(activity);
      }

      const textElement = createElement("div", "snb-text");
      textElement.setAttribute("data-testid", "smooth-chat-text");
      const textNode = doc.createTextNode(text);
      textElement.appendChild(textNode);
      bubble.appendChild(textElement);

      if (role === "assistant") {
        typing = createElement("div", "snb-typing");
        typing.setAttribute("aria-label", "The agent is answering");
        typing.append(createElement("span"), createElement("span"), createElement("span"));
        bubble.appendChild(typing);
      }

      appendToList(bubble);
      return { bubble: bubble, textElement: textElement, textNode: textNode, activity: activity, typing: typing };
    }

    function showError(code, message) {
      const error = appendMessage("error", "");
      error.textElement.textContent = "";
      error.textElement.append(createElement("span", "snb-error-code", code), ": " + message);
    }

    function appendToList(node) {
      if (view.emptyHint.parentNode) {
        view.emptyHint.remove();
      }
      view.list.appendChild(node);
      revealNewest();
    }

    function revealNewest() {
      if (followNewest) {
        view.list.scrollTop = view.list.scrollHeight;
      }
    }

    function updateControls() {
      const ready = connectionState === "connected" && session !== null;
      view.input.disabled = !ready;
      view.input.placeholder = ready ? "Message the agent (Enter to send, Shift+Enter for a new line)" : "Not connected";
      view.sendButton.disabled = !ready || activeTurn !== null;
      view.stopButton.hidden = activeTurn === null;
      view.stopButton.disabled = activeTurn === null || activeTurn.stopRequested;
      view.stopButton.textContent = activeTurn !== null && activeTurn.stopRequested ? "Stopping…" : "Stop";
      view.reconnectButton.hidden = connectionState !== "disconnected";
    }

    // scrollHeight excludes the 1px top and bottom borders, which the
    // border-box height must include.
    function fitInputHeight() {
      view.input.style.height = "auto";
      view.input.style.height = view.input.scrollHeight + 2 + "px";
    }

    function submitInput() {
      if (!session || connectionState !== "connected" || activeTurn !== null) {
        return;
      }
      const text = view.input.value;
      if (text.trim() === "") {
        return;
      }
      view.input.value = "";
      fitInputHeight();
      startTurn(text);
    }

    // --- wiring ---

    view.sendButton.addEventListener("click", guard("send click", submitInput));
    view.stopButton.addEventListener("click", guard("stop click", stopTurn));
    view.reconnectButton.addEventListener("click", guard("reconnect click", reconnect));
    view.input.addEventListener("keydown", guard("input keydown", function (event) {
      // isComposing: Enter also confirms an IME composition, which must not send.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        submitInput();
      }
    }));
    view.input.addEventListener("input", guard("input resize", fitInputHeight));
    view.list.addEventListener("scroll", guard("list scroll", function () {
      const distanceFromBottom = view.list.scrollHeight - view.list.scrollTop - view.list.clientHeight;
      followNewest = distanceFromBottom <= FOLLOW_THRESHOLD_PX;
    }));

    updateControls();
    connect();

    return {
      destroy: function destroy() {
        if (destroyed) {
          return;
        }
        destroyed = true;
        if (activeTurn && activeTurn.cancelTimer !== null) {
          clearTimeout(activeTurn.cancelTimer);
        }
        activeTurn = null;
        detachSocket();
        view.root.remove();
        releaseStylesheet(doc);
      },
    };
  }

  function createButton(label, className, testId) {
    const button = createElement("button", className, label);
    button.type = "button";
    button.setAttribute("data-testid", testId);
    return button;
  }

  function buildView(title, notice, listHeight) {
    const root = createElement("div", "snb-root");
    root.setAttribute("data-testid", "smooth-chat");
    root.setAttribute("data-state", "connecting");
    // Lumino 2's CommandRegistry, which runs JupyterLab 4's shortcuts, skips key
    // events whose target is inside this attribute, so typing here does not
    // run notebook commands.
    // NOTE: taken from Lumino's source, not tried in a running JupyterLab.
    root.setAttribute("data-lm-suppress-shortcuts", "true");

    const header = createElement("div", "snb-header");
    header.appendChild(createElement("div", "snb-title", title));
    const statusArea = createElement("div", "snb-status-area");
    const statusDot = createElement("span", "snb-status-dot");
    statusDot.setAttribute("aria-hidden", "true");
    const status = createElement("span", "snb-status", STATUS_TEXT.connecting);
    status.setAttribute("data-testid", "smooth-chat-status");
    status.setAttribute("role", "status");
    const reconnectButton = createButton("Reconnect", "snb-button snb-button-small", "smooth-chat-reconnect");
    reconnectButton.hidden = true;
    statusArea.append(statusDot, status, reconnectButton);
    header.appendChild(statusArea);
    root.appendChild(header);

    if (notice !== null) {
      const noticeElement = createElement("div", "snb-notice", notice);
      noticeElement.setAttribute("data-testid", "smooth-chat-notice");
      noticeElement.setAttribute("role", "note");
      root.appendChild(noticeElement);
    }

    const list = createElement("div", "snb-messages");
    list.style.height = listHeight;
    list.setAttribute("role", "log");
    list.setAttribute("aria-live", "polite");
    const emptyHint = createElement("div", "snb-empty", "Ask the agent something to start.");
    list.appendChild(emptyHint);
    root.appendChild(list);

    const composer = createElement("div", "snb-composer");
    const input = createElement("textarea", "snb-input");
    input.rows = 1;
    input.disabled = true;
    input.setAttribute("data-testid", "smooth-chat-input");
    input.setAttribute("aria-label", "Message");
    const sendButton = createButton("Send", "snb-button snb-button-primary", "smooth-chat-send");
    sendButton.disabled = true;
    const stopButton = createButton("Stop", "snb-button snb-button-danger", "smooth-chat-stop");
    stopButton.hidden = true;
    composer.append(input, sendButton, stopButton);
    root.appendChild(composer);

    return {
      root: root,
      status: status,
      reconnectButton: reconnectButton,
      list: list,
      emptyHint: emptyHint,
      input: input,
      sendButton: sendButton,
      stopButton: stopButton,
    };
  }

  // A second copy of this file (one per notebook output) keeps the first
  // definition, so every mount shares one implementation. A different
  // version replaces it.
  const existing = globalThis.SmoothNbChat;
  if (!(existing && existing.version === VERSION)) {
    globalThis.SmoothNbChat = { version: VERSION, mount: mount };
  }
})();
