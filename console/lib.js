// What every view shares: the API client, the live event stream, building
// DOM nodes (text is always set as text, never parsed as HTML), times in the
// browser's zone, and the search-and-pager bar of the lists.

const TOKEN_KEY = "csms.console.token";

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  onLoggedOut: () => {},
};

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** Calls the REST API with the operator's token; a 401 logs out. */
export async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (session.token) headers.authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let json = null;
  try {
    json = await response.json();
  } catch {
    json = null;
  }
  if (response.status === 401 && session.token) {
    session.token = null;
    session.onLoggedOut();
  }
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

/** Query string from an object, leaving out empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/**
 * The operator event stream (`GET /api/admin/events`, Server-Sent Events)
 * read with fetch, so the token goes in the Authorization header as for
 * every other call (EventSource cannot send one). Reconnects with a growing
 * pause; `onReconnect` lets the view re-read what it shows, since the stream
 * replays nothing.
 */
export class LiveEvents {
  constructor(onEvent, onState) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.onReconnect = () => {};
    this.controller = null;
    this.stopped = false;
    this.pause = 500;
  }

  start() {
    this.stopped = false;
    this.run();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async run() {
    let first = true;
    while (!this.stopped) {
      this.controller = new AbortController();
      try {
        const response = await fetch("/api/admin/events", {
          headers: { authorization: `Bearer ${session.token}`, accept: "text/event-stream" },
          signal: this.controller.signal,
        });
        if (response.status === 401) {
          session.token = null;
          session.onLoggedOut();
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        this.onState("live");
        this.pause = 500;
        if (!first) this.onReconnect();
        first = false;
        await this.read(response.body);
      } catch (e) {
        if (this.stopped) return;
      }
      if (this.stopped) return;
      this.onState("reconnecting");
      await new Promise((r) => setTimeout(r, this.pause));
      this.pause = Math.min(this.pause * 2, 10000);
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        this.dispatch(block);
      }
    }
  }

  dispatch(block) {
    let name = "message";
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    let parsed;
    try {
      parsed = JSON.parse(data.join("\n"));
    } catch {
      return;
    }
    this.onEvent(name, parsed);
  }
}

/** `h("a", {href: "#/x", class: "y"}, "text", child)`: text children are text nodes. */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

const timeFormat = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium",
  timeStyle: "medium",
});

/** A `<time>` in the browser's zone, the exact UTC time as its title. */
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h("span", {}, iso);
  return h("time", { datetime: d.toISOString(), title: d.toISOString() }, timeFormat.format(d));
}

export function dash(value) {
  return value === undefined || value === null || value === "" ? "—" : String(value);
}

export function kwh(value) {
  return value === undefined || value === null ? "—" : `${Number(value).toFixed(3)} kWh`;
}

export function kw(value) {
  return value === undefined || value === null ? "—" : `${Number(value).toFixed(2)} kW`;
}

export function money(amount, currency) {
  return amount === undefined || amount === null ? "—" : `${amount} ${currency || ""}`.trim();
}

export function percent(value) {
  return value === undefined || value === null ? "—" : `${value} %`;
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind || String(text).toLowerCase()}` }, text);
}

/**
 * A table in a scrolling wrapper (wide tables scroll on a phone). `rows` is
 * the `<tbody>` the caller fills (and refills), or rows to put in a new one.
 */
export function table(caption, headers, rows) {
  const body = rows instanceof HTMLTableSectionElement ? rows : h("tbody", {}, rows);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      body,
    ),
  );
}

/** Shows an error (or clears it) in a `role=alert` region. */
export function showError(node, error) {
  if (!error) return fill(node);
  let text = error.message || String(error);
  const details = error.body && error.body.details;
  if (details && details.field) text += ` (field: ${details.field})`;
  if (details && details.errors) text += ` ${JSON.stringify(details.errors)}`;
  return fill(node, text);
}

/**
 * A list's search box and pager. `load({q, offset})` fetches a page and
 * returns its `pagination`; the bar shows "41–60 of 10,000" and moves by
 * `limit`. Searching waits for a pause in typing.
 */
export function listBar({ label, placeholder, state, load }) {
  const status = h("span", { class: "muted", "aria-live": "polite" });
  const prev = h("button", { type: "button", class: "secondary" }, "← Previous");
  const next = h("button", { type: "button", class: "secondary" }, "Next →");
  const input = h("input", {
    type: "search",
    id: `search-${label.toLowerCase().replace(/\W+/g, "-")}`,
    placeholder: placeholder || "Search",
    value: state.q || "",
    autocomplete: "off",
  });
  let timer = null;
  let pagination = { total: 0, limit: 50, offset: 0 };
  function show() {
    const { total, limit } = pagination;
    const shown = Math.min(state.offset + limit, total);
    const from = shown === 0 ? 0 : state.offset + 1;
    fill(status, `${from.toLocaleString()}–${shown.toLocaleString()} of ${total.toLocaleString()}`);
    prev.disabled = state.offset === 0;
    next.disabled = state.offset + limit >= total;
  }
  async function go(offset) {
    state.offset = Math.max(0, offset);
    pagination = (await load(state)) || pagination;
    show();
  }
  prev.addEventListener("click", () => go(state.offset - pagination.limit));
  next.addEventListener("click", () => go(state.offset + pagination.limit));
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      state.q = input.value.trim();
      go(0);
    }, 250);
  });
  const bar = h(
    "div",
    { class: "list-bar" },
    h("label", { for: input.id, class: "search" }, h("span", {}, label), input),
    h("div", { class: "pager" }, prev, status, next),
  );
  return {
    bar,
    go,
    reload: () => go(state.offset),
    // A row added or removed by a live event, without re-reading the page.
    adjustTotal(delta) {
      pagination.total = Math.max(0, pagination.total + delta);
      show();
    },
  };
}

/** A labelled form field. `field({name, label, type, options, value, required})`. */
export function field(spec, idPrefix) {
  const id = `${idPrefix || "f"}-${spec.name}`;
  let control;
  if (spec.type === "select") {
    control = h(
      "select",
      { id, name: spec.name, required: spec.required },
      (spec.options || []).map((o) => h("option", { value: o, selected: o === spec.value }, o === "" ? "any" : o)),
    );
  } else if (spec.type === "textarea") {
    control = h("textarea", { id, name: spec.name, rows: spec.rows || 6, required: spec.required, spellcheck: "false" }, spec.value || "");
  } else {
    control = h("input", {
      id,
      name: spec.name,
      type: spec.type || "text",
      value: spec.value ?? "",
      required: spec.required,
      min: spec.min,
      step: spec.step,
      list: spec.list,
      placeholder: spec.placeholder,
      autocomplete: spec.autocomplete || "off",
    });
  }
  return h("div", { class: "field" }, h("label", { for: id }, spec.label), control, spec.hint ? h("small", { class: "muted" }, spec.hint) : null);
}

/** Reads a form's named controls; numbers for `type=number`, empty left out. */
export function formValues(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.value === "") continue;
    out[el.name] = el.type === "number" ? Number(el.value) : el.value;
  }
  return out;
}

/** Wraps a submit handler: disables the button while it runs, shows errors. */
export function onSubmit(form, errorNode, handler) {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    showError(errorNode);
    try {
      await handler(formValues(form));
    } catch (error) {
      showError(errorNode, error);
    } finally {
      if (button) button.disabled = false;
    }
  });
}
