// The console's pages. Each view renders into `main` and returns the
// handlers the shell calls: `onEvent(name, data)` for each live event (rows
// are patched in place, never the whole list re-read), `onReconnect()` after
// the stream was down (it replays nothing, so the page re-reads), and
// `dispose()` when the page is left.

import {
  api, qs, h, fill, time, dash, kwh, kw, money, percent, badge, table, showError,
  listBar, field, onSubmit,
} from "./lib.js";

const PAGE = 50;

const enc = encodeURIComponent;
const chargerLink = (id) => h("a", { href: `#/chargers/${enc(id)}` }, id);
const txLink = (id) => (id === null || id === undefined ? "—" : h("a", { href: `#/transactions/${id}` }, `#${id}`));
const userLink = (id) => (id ? h("a", { href: `#/users/${enc(id)}` }, id) : "—");

function connection(connected) {
  return badge(connected ? "online" : "offline", connected ? "online" : "offline");
}

function connectorBadges(connectors) {
  return (connectors || [])
    .filter((c) => c.connectorId !== 0)
    .map((c) =>
      h(
        "span",
        { class: `badge status-${String(c.status).toLowerCase()}`, dataset: { connector: c.connectorId }, title: c.errorCode && c.errorCode !== "NoError" ? c.errorCode : null },
        `${c.connectorId}: ${c.status}`,
      ),
    );
}

// ---------------------------------------------------------------- chargers

async function chargers(main, _parts, params) {
  const state = { q: params.get("q") || "", offset: 0 };
  const rows = new Map(); // id → { tr, station }
  const tbody = h("tbody");
  const list = h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { id: "chargers" },
      h("thead", {}, h("tr", {}, ["Charger", "Connection", "Registration", "Vendor / model", "Firmware", "Last heartbeat", "Connectors"].map((t) => h("th", { scope: "col" }, t)))),
      tbody,
    ),
  );

  function row(s) {
    const tr = h(
      "tr",
      { dataset: { charger: s.id } },
      h("td", {}, chargerLink(s.id), s.name ? h("div", { class: "muted" }, s.name) : null),
      h("td", { class: "conn" }, connection(s.connected)),
      h("td", { class: "registration" }, dash(s.registrationStatus)),
      h("td", { class: "model" }, [s.vendor, s.model].filter(Boolean).join(" / ") || "—"),
      h("td", { class: "firmware" }, dash(s.firmwareVersion)),
      h("td", { class: "heartbeat" }, time(s.lastHeartbeat)),
      h("td", { class: "connectors" }, connectorBadges(s.connectors)),
    );
    rows.set(s.id, { tr, station: s });
    return tr;
  }

  const bar = listBar({
    label: "Search chargers",
    placeholder: "Id or station name",
    state,
    load: async ({ q, offset }) => {
      const body = await api("GET", `/api/admin/stations${qs({ q, offset, limit: PAGE })}`);
      rows.clear();
      fill(tbody, body.data.map(row));
      if (!body.data.length) fill(tbody, h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No chargers match.")));
      return body.pagination;
    },
  });
  fill(main, h("h1", {}, "Chargers"), bar.bar, list);
  await bar.go(0);

  function patch(id, update) {
    const r = rows.get(id);
    if (!r) return false;
    update(r.tr, r.station);
    return true;
  }

  // Reads of chargers this page does not show yet, newest wins.
  const reads = new Map();
  async function added(id) {
    // A charger that boots and is not on this page: the first
    // page of the list (unfiltered, or a search it matches) takes it at the
    // top, so a new charger shows up where the operator is looking.
    if (state.offset !== 0) return;
    if (state.q && !id.toLowerCase().includes(state.q.toLowerCase())) return;
    const seq = (reads.get(id) || 0) + 1;
    reads.set(id, seq);
    let body;
    try {
      body = await api("GET", `/api/admin/stations/${enc(id)}`);
    } catch {
      return;
    }
    if (reads.get(id) !== seq) return; // a later read is on its way
    const fresh = row(body.data);
    const existing = tbody.querySelector(`tr[data-charger="${CSS.escape(id)}"]`);
    if (existing) {
      existing.replaceWith(fresh);
      return;
    }
    const empty = tbody.querySelector("td[colspan]");
    if (empty) empty.parentElement.remove();
    tbody.prepend(fresh);
    bar.adjustTotal(1);
  }

  // An event for a charger whose row is still being read: read it again,
  // so the row shows what the event changed.
  const missed = (id) => { if (reads.has(id)) added(id); };

  return {
    onReconnect: () => bar.reload(),
    onEvent(name, d) {
      if (name === "charger.connected" || name === "charger.disconnected") {
        const on = name === "charger.connected";
        // A charger not on this page is read when it boots (a new one is
        // stored only then).
        patch(d.chargerId, (tr, s) => { s.connected = on; fill(tr.querySelector(".conn"), connection(on)); }) || missed(d.chargerId);
      } else if (name === "connector.status") {
        patch(d.chargerId, (tr, s) => {
          const list = (s.connectors || []).filter((c) => c.connectorId !== d.connectorId);
          list.push({ connectorId: d.connectorId, status: d.status, errorCode: d.errorCode });
          list.sort((a, b) => a.connectorId - b.connectorId);
          s.connectors = list;
          fill(tr.querySelector(".connectors"), connectorBadges(list));
        }) || missed(d.chargerId);
      } else if (name === "charger.booted") {
        if (!patch(d.chargerId, (tr, s) => {
          Object.assign(s, { vendor: d.vendor, model: d.model, firmwareVersion: d.firmwareVersion, registrationStatus: d.registrationStatus });
          fill(tr.querySelector(".registration"), dash(d.registrationStatus));
          fill(tr.querySelector(".model"), [d.vendor, d.model].filter(Boolean).join(" / "));
          fill(tr.querySelector(".firmware"), dash(d.firmwareVersion));
        })) added(d.chargerId);
      } else if (name === "charger.heartbeat") {
        patch(d.chargerId, (tr) => fill(tr.querySelector(".heartbeat"), time(d.at))) || missed(d.chargerId);
      }
    },
  };
}

// ------------------------------------------------------------ one charger

const COMMANDS = {
  Reset: [{ name: "type", label: "Type", type: "select", options: ["Soft", "Hard"], required: true }],
  UnlockConnector: [{ name: "connectorId", label: "Connector", type: "number", min: 1, value: 1, required: true }],
  RemoteStartTransaction: [
    { name: "idTag", label: "idTag (a driver's tag)", list: "idtag-options", required: true },
    { name: "connectorId", label: "Connector (optional)", type: "number", min: 1 },
  ],
  RemoteStopTransaction: [{ name: "transactionId", label: "Transaction id", type: "number", min: 0, required: true }],
  ChangeAvailability: [
    { name: "connectorId", label: "Connector (0: the whole charger)", type: "number", min: 0, value: 0, required: true },
    { name: "type", label: "Availability", type: "select", options: ["Operative", "Inoperative"], required: true },
  ],
  ChangeConfiguration: [
    { name: "key", label: "Key", required: true, placeholder: "HeartbeatInterval" },
    { name: "value", label: "Value", required: true },
  ],
  GetConfiguration: [{ name: "key", label: "Keys (comma-separated; empty: all)" }],
  TriggerMessage: [
    { name: "requestedMessage", label: "Message", type: "select", required: true,
      options: ["BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StatusNotification"] },
    { name: "connectorId", label: "Connector (optional)", type: "number", min: 0 },
  ],
  ClearCache: [],
};

const ALL_COMMANDS = [
  "CancelReservation", "ChangeAvailability", "ChangeConfiguration", "ClearCache", "ClearChargingProfile",
  "DataTransfer", "GetCompositeSchedule", "GetConfiguration", "GetDiagnostics", "GetLocalListVersion",
  "RemoteStartTransaction", "RemoteStopTransaction", "ReserveNow", "Reset", "SendLocalList",
  "SetChargingProfile", "TriggerMessage", "UnlockConnector", "UpdateFirmware", "CertificateSigned",
  "DeleteCertificate", "ExtendedTriggerMessage", "GetInstalledCertificateIds", "GetLog",
  "InstallCertificate", "SignedUpdateFirmware",
];

function answerBox(id) {
  return h("pre", { id, class: "answer", "aria-live": "polite", tabindex: 0 });
}

async function sendCommand(chargerId, action, payload, out) {
  fill(out, `Sending ${action}…`);
  out.className = "answer pending";
  try {
    const body = await api("POST", `/api/admin/stations/${enc(chargerId)}/commands/${action}`, payload);
    out.className = "answer ok";
    fill(out, `${action}: ${JSON.stringify(body.data, null, 2)}`);
  } catch (error) {
    out.className = "answer failed";
    const details = error.body && error.body.details ? `\n${JSON.stringify(error.body.details, null, 2)}` : "";
    fill(out, `${action} failed (${error.status || "network"}): ${error.message}${details}`);
  }
}

function commandPanel(chargerId) {
  const out = answerBox("command-answer");
  const select = h("select", { id: "command" }, Object.keys(COMMANDS).map((c) => h("option", { value: c }, c)));
  const fields = h("div", { class: "fields" });
  const datalist = h("datalist", { id: "idtag-options" });
  function show() {
    fill(fields, COMMANDS[select.value].map((f) => field(f, "cmd")));
    const tag = fields.querySelector("[name=idTag]");
    if (tag) {
      tag.addEventListener("input", async () => {
        if (tag.value.length < 1) return;
        try {
          const body = await api("GET", `/api/admin/id-tags${qs({ q: tag.value, limit: 10 })}`);
          fill(datalist, body.data.map((t) => h("option", { value: t.idTag }, `${t.idTag} (${t.userId || "no user"}, ${t.status})`)));
        } catch { /* suggestions only */ }
      });
    }
  }
  select.addEventListener("change", show);
  show();
  const form = h(
    "form",
    { id: "command-form" },
    h("div", { class: "field" }, h("label", { for: "command" }, "Command"), select),
    fields,
    datalist,
    h("button", { type: "submit", id: "command-send" }, "Send"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const action = select.value;
    const payload = {};
    for (const el of fields.querySelectorAll("[name]")) {
      if (el.value === "") continue;
      payload[el.name] = el.type === "number" ? Number(el.value) : el.value;
    }
    if (action === "GetConfiguration" && payload.key) payload.key = payload.key.split(",").map((k) => k.trim()).filter(Boolean);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    await sendCommand(chargerId, action, payload, out);
    button.disabled = false;
  });

  const rawOut = answerBox("raw-answer");
  const rawAction = h("select", { id: "raw-action", name: "action" }, ALL_COMMANDS.map((c) => h("option", { value: c }, c)));
  const rawPayload = h("textarea", { id: "raw-payload", name: "payload", rows: 6, spellcheck: "false" }, "{}");
  const rawForm = h(
    "form",
    { id: "raw-form" },
    h("div", { class: "field" }, h("label", { for: "raw-action" }, "Command"), rawAction),
    h("div", { class: "field" }, h("label", { for: "raw-payload" }, "Payload (JSON; checked against the command's OCPP 1.6 schema before it is sent)"), rawPayload),
    h("button", { type: "submit" }, "Send"),
  );
  rawForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    let payload;
    try {
      payload = JSON.parse(rawPayload.value);
    } catch (error) {
      rawOut.className = "answer failed";
      fill(rawOut, `Not JSON: ${error.message}`);
      return;
    }
    if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
      rawOut.className = "answer failed";
      fill(rawOut, "The payload must be a JSON object.");
      return;
    }
    await sendCommand(chargerId, rawAction.value, payload, rawOut);
  });

  return h(
    "section",
    { "aria-labelledby": "commands-title", class: "panel" },
    h("h2", { id: "commands-title" }, "Commands"),
    h("div", { class: "columns" },
      h("div", {}, form, out),
      h("details", {}, h("summary", {}, "Any OCPP 1.6 command as JSON"), rawForm, rawOut)),
  );
}

function dl(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([k, v, cls]) => [h("dt", {}, k), h("dd", { class: cls }, v)]));
}

async function charger(main, parts) {
  const id = parts[0];
  let station = (await api("GET", `/api/admin/stations/${enc(id)}`)).data;
  const facts = h("div");
  const connectors = h("div", { id: "connectors", class: "connector-list" });
  const regError = h("p", { class: "error", role: "alert" });

  function renderFacts() {
    const actions = h("div", { class: "actions" });
    if (station.isOcppCharger && station.registrationStatus !== "Accepted") {
      actions.append(h("button", { type: "button", id: "accept", onclick: () => register("Accepted") }, "Accept"));
    }
    if (station.isOcppCharger && station.registrationStatus !== "Rejected") {
      actions.append(h("button", { type: "button", class: "secondary", onclick: () => register("Rejected") }, "Reject"));
    }
    fill(
      facts,
      dl([
        ["Connection", h("span", {}, connection(station.connected), station.connectedSince ? [" since ", time(station.connectedSince)] : null), "conn"],
        ["Registration", h("span", { id: "registration" }, dash(station.registrationStatus))],
        ["Vendor / model", [station.vendor, station.model].filter(Boolean).join(" / ") || "—"],
        ["Serial number", dash(station.serialNumber)],
        ["Firmware", dash(station.firmwareVersion)],
        ["Last heartbeat", time(station.lastHeartbeat), "heartbeat"],
        ["Last seen", time(station.lastSeen)],
        ["Tariff", station.pricePerKWh !== null ? `${station.pricePerKWh} ${station.currency}/kWh` : "default"],
        ["Password", station.hasOcppPassword ? "set (Basic auth required)" : "none"],
      ]),
      actions,
      regError,
    );
    fill(connectors, connectorBadges(station.connectors));
  }

  async function register(status) {
    showError(regError);
    try {
      station = (await api("PUT", `/api/admin/stations/${enc(id)}/registration`, { status })).data;
      renderFacts();
    } catch (error) {
      showError(regError, error);
    }
  }

  const tariffError = h("p", { class: "error", role: "alert" });
  const tariffDone = h("p", { class: "muted", "aria-live": "polite" });
  const tariff = h(
    "form",
    { id: "tariff-form" },
    field({ name: "name", label: "Station name", value: station.name || id, required: true }, "tariff"),
    field({ name: "pricePerKWh", label: "Price per kWh", type: "number", step: "any", min: 0, value: station.pricePerKWh ?? "", required: true }, "tariff"),
    field({ name: "currency", label: "Currency (ISO 4217)", value: station.currency || "EUR", required: true }, "tariff"),
    field({ name: "ocppPassword", label: "New charger password (optional, 8–64 characters)", type: "password", autocomplete: "new-password" }, "tariff"),
    tariffError,
    tariffDone,
    h("button", { type: "submit" }, "Save tariff and password"),
  );
  onSubmit(tariff, tariffError, async (v) => {
    station = (await api("PUT", `/api/admin/stations/${enc(id)}`, v)).data;
    tariff.elements.ocppPassword.value = "";
    fill(tariffDone, "Saved.");
    renderFacts();
  });

  const txState = { offset: 0 };
  const txBody = h("tbody");
  const txBar = listBar({
    label: "Transactions",
    placeholder: "",
    state: txState,
    load: async ({ offset }) => {
      const body = await api("GET", `/api/admin/stations/${enc(id)}/transactions${qs({ offset, limit: 20 })}`);
      fill(txBody, body.data.map((t) => h("tr", {}, h("td", {}, txLink(t.id)), h("td", {}, t.connectorId), h("td", {}, t.idTag), h("td", {}, badge(t.status)), h("td", {}, time(t.startTime)), h("td", {}, time(t.stopTime)), h("td", {}, kwh(t.energyWh / 1000)))));
      return body.pagination;
    },
  });
  txBar.bar.querySelector(".search").hidden = true;

  const logState = { offset: 0 };
  const logBody = h("tbody");
  const logBar = listBar({
    label: "Message log",
    state: logState,
    load: async ({ offset }) => {
      const body = await api("GET", `/api/admin/stations/${enc(id)}/messages${qs({ offset, limit: 25 })}`);
      fill(logBody, body.data.map(frameRow));
      return body.pagination;
    },
  });
  logBar.bar.querySelector(".search").hidden = true;

  renderFacts();
  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/chargers" }, "Chargers"), " / ", id),
    h("h1", {}, `Charger ${id}`),
    h("div", { class: "columns" },
      h("section", { class: "panel", "aria-labelledby": "state-title" }, h("h2", { id: "state-title" }, "State"), facts, h("h3", {}, "Connectors"), connectors),
      h("section", { class: "panel", "aria-labelledby": "tariff-title" }, h("h2", { id: "tariff-title" }, "Tariff and password"), tariff)),
    commandPanel(id),
    h("section", { class: "panel", "aria-labelledby": "tx-title" }, h("h2", { id: "tx-title" }, "Transactions"), txBar.bar,
      table(null, ["Transaction", "Connector", "idTag", "Status", "Started", "Stopped", "Energy"], txBody)),
    h("section", { class: "panel", "aria-labelledby": "log-title" }, h("h2", { id: "log-title" }, "Message log"), logBar.bar,
      table(null, ["Time", "Direction", "Action", "Message id", "Payload"], logBody)),
  );
  await Promise.all([txBar.go(0), logBar.go(0)]);

  let refresh = null;
  const later = (fn) => { clearTimeout(refresh); refresh = setTimeout(fn, 300); };

  return {
    dispose: () => clearTimeout(refresh),
    onReconnect: async () => {
      station = (await api("GET", `/api/admin/stations/${enc(id)}`)).data;
      renderFacts();
      txBar.reload();
      logBar.reload();
    },
    onEvent(name, d) {
      if (d.chargerId !== id) return;
      if (name === "charger.connected" || name === "charger.disconnected") {
        station.connected = name === "charger.connected";
        if (station.connected) station.connectedSince = new Date().toISOString();
        renderFacts();
      } else if (name === "connector.status") {
        const list = (station.connectors || []).filter((c) => c.connectorId !== d.connectorId);
        list.push({ connectorId: d.connectorId, status: d.status, errorCode: d.errorCode });
        list.sort((a, b) => a.connectorId - b.connectorId);
        station.connectors = list;
        fill(connectors, connectorBadges(list));
      } else if (name === "charger.booted") {
        Object.assign(station, { vendor: d.vendor, model: d.model, firmwareVersion: d.firmwareVersion, serialNumber: d.serialNumber, registrationStatus: d.registrationStatus });
        renderFacts();
      } else if (name === "charger.heartbeat") {
        station.lastHeartbeat = d.at;
        station.lastSeen = d.at;
        renderFacts();
      } else if (name.startsWith("session.")) {
        if (txState.offset === 0) later(() => txBar.reload());
      }
      if (logState.offset === 0) later(() => { logBar.reload(); if (txState.offset === 0) txBar.reload(); });
    },
  };
}

function frameRow(m) {
  const kinds = { 2: "CALL", 3: "RESULT", 4: "ERROR" };
  return h(
    "tr",
    {},
    h("td", {}, time(m.loggedAt)),
    h("td", {}, m.direction === "in" ? "charger → server" : "server → charger"),
    h("td", {}, m.action || kinds[m.messageType] || m.messageType),
    h("td", { class: "mono" }, m.messageId),
    h("td", { class: "mono payload" }, m.payload),
  );
}

// ---------------------------------------------------------------- sessions

function sessionCells(s) {
  return [
    h("td", { class: "energy" }, kwh(s.energyDelivered)),
    h("td", { class: "power" }, kw(s.averagePower)),
    h("td", { class: "cost" }, money(s.totalCost, s.currency)),
    h("td", { class: "battery" }, percent(s.batteryLevel)),
  ];
}

async function sessions(main, _parts, params) {
  const activeBody = h("tbody", { id: "active-sessions" });
  const activeRows = new Map();
  function activeRow(s) {
    const tr = h(
      "tr",
      { dataset: { session: s.id } },
      h("td", {}, s.chargerId ? chargerLink(s.chargerId) : s.stationName),
      h("td", {}, s.connectorId),
      h("td", {}, userLink(s.userId)),
      h("td", {}, time(s.startTime)),
      sessionCells(s),
      h("td", {}, txLink(s.transactionId)),
    );
    activeRows.set(s.id, tr);
    return tr;
  }
  const activeState = { offset: 0 };
  const activeBar = listBar({
    label: "Active sessions",
    state: activeState,
    load: async ({ offset }) => {
      const body = await api("GET", `/api/admin/sessions/history${qs({ status: "active", offset, limit: PAGE })}`);
      activeRows.clear();
      fill(activeBody, body.data.map(activeRow));
      return body.pagination;
    },
  });
  activeBar.bar.querySelector(".search").hidden = true;

  const historyRow = (s) => h("tr", { dataset: { history: s.id } },
    h("td", {}, s.chargerId ? chargerLink(s.chargerId) : s.stationName),
    h("td", {}, userLink(s.userId)),
    h("td", {}, badge(s.status)),
    h("td", {}, time(s.startTime)),
    h("td", {}, time(s.endTime)),
    h("td", {}, `${s.duration} min`),
    sessionCells(s),
    h("td", {}, txLink(s.transactionId)));
  const histState = { q: params.get("q") || "", offset: 0 };
  const histBody = h("tbody", { id: "session-history" });
  const filters = h(
    "form",
    { class: "filters", id: "history-filters" },
    field({ name: "status", label: "Status", type: "select", options: ["", "active", "completed", "cancelled"] }, "hist"),
    field({ name: "from", label: "Started from", type: "date" }, "hist"),
    field({ name: "to", label: "Started before", type: "date" }, "hist"),
  );
  const histBar = listBar({
    label: "Search sessions",
    placeholder: "Station, driver or idTag",
    state: histState,
    load: async ({ q, offset }) => {
      const f = filters.elements;
      const day = (v) => (v ? new Date(`${v}T00:00:00`).toISOString() : "");
      const body = await api("GET", `/api/admin/sessions/history${qs({ q, offset, limit: PAGE, status: f.status.value, from: day(f.from.value), to: day(f.to.value) })}`);
      fill(histBody, body.data.map(historyRow));
      return body.pagination;
    },
  });
  filters.addEventListener("change", () => histBar.go(0));

  fill(
    main,
    h("h1", {}, "Sessions"),
    h("section", { class: "panel", "aria-labelledby": "active-title" }, h("h2", { id: "active-title" }, "Active now"), activeBar.bar,
      table(null, ["Charger / station", "Connector", "Driver", "Started", "Energy", "Avg. power", "Cost", "Battery", "Transaction"], activeBody)),
    h("section", { class: "panel", "aria-labelledby": "hist-title" }, h("h2", { id: "hist-title" }, "History"), filters, histBar.bar,
      table(null, ["Charger / station", "Driver", "Status", "Started", "Ended", "Duration", "Energy", "Avg. power", "Cost", "Battery", "Transaction"], histBody)),
  );
  await Promise.all([activeBar.go(0), histBar.go(0)]);

  return {
    onReconnect: () => { activeBar.reload(); histBar.reload(); },
    onEvent(name, s) {
      if (!name.startsWith("session.")) return;
      const shown = histBody.querySelector(`tr[data-history="${CSS.escape(s.id)}"]`);
      if (shown) shown.replaceWith(historyRow(s));
      const tr = activeRows.get(s.id);
      if (name === "session.updated" || name === "session.started") {
        if (tr) {
          const cells = tr.querySelectorAll("td");
          const fresh = sessionCells(s);
          for (let i = 0; i < 4; i++) cells[4 + i].replaceWith(fresh[i]);
          fill(tr.lastElementChild, txLink(s.transactionId));
        } else if (s.status === "active" && activeState.offset === 0) {
          activeBody.prepend(activeRow(s));
          activeBar.adjustTotal(1);
        }
      } else if (tr) {
        tr.remove();
        activeRows.delete(s.id);
        activeBar.adjustTotal(-1);
      }
    },
  };
}

// ------------------------------------------------------------ transaction

async function transaction(main, parts) {
  const id = parts[0];
  let view = (await api("GET", `/api/admin/transactions/${enc(id)}`)).data;
  const facts = h("div");
  const chartBox = h("div", { id: "chart", class: "chart", role: "img", "aria-label": "Energy and power over time" });
  const anomalies = h("tbody");
  const frames = h("tbody");
  let plot = null;

  function chartData() {
    const xs = [], energy = [], power = [], soc = [];
    for (const p of view.series) {
      xs.push(new Date(p.at).getTime() / 1000);
      energy.push(p.energyWh === null ? null : p.energyWh / 1000);
      power.push(p.powerW === null ? null : p.powerW / 1000);
      soc.push(p.soc);
    }
    return [xs, energy, power, soc];
  }

  function drawChart() {
    const data = chartData();
    if (!window.uPlot) {
      fill(chartBox, h("p", { class: "muted" }, "Chart library not loaded."));
      return;
    }
    if (plot) {
      plot.setData(data);
      return;
    }
    const width = Math.max(280, chartBox.clientWidth || 600);
    plot = new window.uPlot(
      {
        width,
        height: 280,
        scales: { x: { time: true }, kWh: {}, kW: {}, pct: { range: [0, 100] } },
        series: [
          {},
          { label: "Energy (kWh)", scale: "kWh", stroke: "#1f6feb", width: 2, spanGaps: true },
          { label: "Power (kW)", scale: "kW", stroke: "#d1242f", width: 2, spanGaps: true },
          { label: "Battery (%)", scale: "pct", stroke: "#1a7f37", width: 1, dash: [4, 4], spanGaps: true },
        ],
        axes: [{}, { scale: "kWh", label: "kWh" }, { scale: "kW", side: 1, label: "kW", grid: { show: false } }],
      },
      data,
      chartBox,
    );
  }

  function renderFacts() {
    const t = view.transaction;
    const s = view.session;
    fill(
      facts,
      dl([
        ["Charger", chargerLink(t.chargerId)],
        ["Connector", t.connectorId],
        ["idTag", `${t.idTag} (${t.idTagStatus})`],
        ["Status", badge(t.status)],
        ["Started", time(t.startTime)],
        ["Stopped", time(t.stopTime)],
        ["Stop reason", dash(t.stopReason)],
        ["Meter start / stop", `${t.meterStart} Wh / ${t.meterStop ?? "—"}${t.meterStop !== null ? " Wh" : ""}`],
        ["Energy", kwh(t.energyWh / 1000), "energy"],
        ["Power (last)", t.powerWLast !== null ? kw(t.powerWLast / 1000) : "—", "power"],
        ["Battery", t.socLast !== null ? percent(t.socLast) : "—"],
        ["Session", s ? h("span", {}, badge(s.status), " ", money(s.totalCost, s.currency), " · driver ", userLink(s.userId)) : "—", "cost"],
      ]),
    );
    fill(anomalies, view.anomalies.length ? view.anomalies.map(anomalyRow) : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "None.")));
  }

  async function loadFrames() {
    const body = await api("GET", `/api/admin/transactions/${enc(id)}/messages${qs({ limit: 500 })}`);
    fill(frames, body.data.map(frameRow));
  }

  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: `#/chargers/${enc(view.transaction.chargerId)}` }, view.transaction.chargerId), " / transaction"),
    h("h1", {}, `Transaction #${id}`),
    h("section", { class: "panel" }, facts),
    h("section", { class: "panel", "aria-labelledby": "chart-title" }, h("h2", { id: "chart-title" }, "Meter values"), chartBox),
    h("section", { class: "panel", "aria-labelledby": "anom-title" }, h("h2", { id: "anom-title" }, "Anomalies"),
      table(null, ["When", "Charger", "Transaction", "Kind", "Detail"], anomalies)),
    h("section", { class: "panel", "aria-labelledby": "frames-title" }, h("h2", { id: "frames-title" }, "Message log while it ran"),
      table(null, ["Time", "Direction", "Action", "Message id", "Payload"], frames)),
  );
  renderFacts();
  drawChart();
  await loadFrames();

  let timer = null;
  const refresh = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      view = (await api("GET", `/api/admin/transactions/${enc(id)}`)).data;
      renderFacts();
      drawChart();
      loadFrames();
    }, 200);
  };
  return {
    dispose: () => { clearTimeout(timer); if (plot) plot.destroy(); },
    onReconnect: refresh,
    onEvent(name, d) {
      if ((name.startsWith("session.") && String(d.transactionId) === String(id)) ||
          (name === "anomaly" && String(d.transactionId) === String(id))) refresh();
    },
  };
}

// -------------------------------------------------------------- anomalies

function anomalyRow(a) {
  return h(
    "tr",
    {},
    h("td", {}, time(a.occurredAt)),
    h("td", {}, chargerLink(a.chargerId)),
    h("td", {}, txLink(a.transactionId)),
    h("td", {}, a.kind),
    h("td", { class: "mono payload" }, typeof a.detail === "string" ? a.detail : JSON.stringify(a.detail)),
  );
}

async function anomaliesView(main, _parts, params) {
  const stuckBody = h("tbody", { id: "stuck" });
  async function loadStuck() {
    const body = await api("GET", "/api/admin/sessions");
    const stuck = body.data.filter((s) => s.looksStuck);
    fill(stuckBody, stuck.length ? stuck.map((s) => h("tr", {},
      h("td", {}, s.chargerId ? chargerLink(s.chargerId) : s.stationName),
      h("td", {}, userLink(s.userId)),
      h("td", {}, time(s.startTime)),
      h("td", {}, time(s.updatedAt)),
      h("td", {}, txLink(s.transactionId)),
      h("td", {}, s.transactionId === null ? "remote start not confirmed" : "charger offline or silent"))) :
      h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No session looks stuck.")));
  }
  const state = { q: params.get("charger") || "", offset: 0 };
  const body = h("tbody", { id: "anomaly-list" });
  const bar = listBar({
    label: "Charger",
    placeholder: "Exact charger id",
    state,
    load: async ({ q, offset }) => {
      const r = await api("GET", `/api/admin/anomalies${qs({ chargerId: q, offset, limit: PAGE })}`);
      fill(body, r.data.map(anomalyRow));
      return r.pagination;
    },
  });
  fill(
    main,
    h("h1", {}, "Anomalies and stuck sessions"),
    h("section", { class: "panel", "aria-labelledby": "stuck-title" }, h("h2", { id: "stuck-title" }, "Sessions that look stuck"),
      h("p", { class: "muted" }, "Active charger sessions whose charger is offline or silent for an hour, or whose remote start the charger never confirmed. Open the charger to stop the transaction or reset it."),
      table(null, ["Charger / station", "Driver", "Started", "Last change", "Transaction", "Why"], stuckBody)),
    h("section", { class: "panel", "aria-labelledby": "anomalies-title" }, h("h2", { id: "anomalies-title" }, "Anomalies, newest first"), bar.bar,
      table(null, ["When", "Charger", "Transaction", "Kind", "Detail"], body)),
  );
  await Promise.all([loadStuck(), bar.go(0)]);
  let timer = null;
  return {
    dispose: () => clearTimeout(timer),
    onReconnect: () => { loadStuck(); bar.reload(); },
    onEvent(name, d) {
      if (name === "anomaly" && state.offset === 0 && (!state.q || state.q === d.chargerId)) {
        body.prepend(anomalyRow(d));
        bar.adjustTotal(1);
      }
      if (name.startsWith("session.") || name.startsWith("charger.")) {
        clearTimeout(timer);
        timer = setTimeout(loadStuck, 500);
      }
    },
  };
}

// ------------------------------------------------------------------ users

async function users(main, parts, params) {
  if (parts[0]) return user(main, parts[0]);
  const state = { q: params.get("q") || "", offset: 0 };
  const body = h("tbody", { id: "users" });
  const bar = listBar({
    label: "Search users",
    placeholder: "Id, name or email",
    state,
    load: async ({ q, offset }) => {
      const r = await api("GET", `/api/admin/users${qs({ q, offset, limit: PAGE })}`);
      fill(body, r.data.map((u) => h("tr", {}, h("td", {}, userLink(u.id)), h("td", {}, u.name), h("td", {}, dash(u.email)), h("td", {}, u.role), h("td", {}, time(u.createdAt)))));
      return r.pagination;
    },
  });
  const error = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    { id: "user-form", class: "inline-form" },
    field({ name: "id", label: "User id", required: true }, "user"),
    field({ name: "name", label: "Name", required: true }, "user"),
    field({ name: "email", label: "Email (optional)", type: "email" }, "user"),
    field({ name: "role", label: "Role", type: "select", options: ["driver", "admin"] }, "user"),
    field({ name: "batteryCapacity", label: "Battery kWh (optional)", type: "number", step: "any", min: 0.1 }, "user"),
    h("button", { type: "submit" }, "Save user"),
    error,
  );
  onSubmit(form, error, async (v) => {
    const { id, ...rest } = v;
    await api("PUT", `/api/admin/users/${enc(id)}`, rest);
    location.hash = `#/users/${enc(id)}`;
  });
  fill(main, h("h1", {}, "Users"),
    h("section", { class: "panel", "aria-labelledby": "new-user" }, h("h2", { id: "new-user" }, "Create or update a user"), form),
    h("section", { class: "panel" }, bar.bar, table(null, ["Id", "Name", "Email", "Role", "Created"], body)));
  await bar.go(0);
  return { onReconnect: () => bar.reload() };
}

function tagActions(t, done, errorNode) {
  const put = async (changes) => {
    showError(errorNode);
    try {
      await api("PUT", `/api/admin/id-tags/${enc(t.idTag)}`, { userId: t.userId, status: t.status, expiryDate: t.expiryDate || undefined, parentIdTag: t.parentIdTag || undefined, ...changes });
      done();
    } catch (error) {
      showError(errorNode, error);
    }
  };
  return t.status === "Blocked"
    ? h("button", { type: "button", class: "secondary", dataset: { unblock: t.idTag }, onclick: () => put({ status: "Accepted" }) }, `Unblock ${t.idTag}`)
    : h("button", { type: "button", class: "danger", dataset: { block: t.idTag }, onclick: () => put({ status: "Blocked" }) }, `Block ${t.idTag}`);
}

function tagRow(t, done, errorNode) {
  const expiry = t.expiryDate && new Date(t.expiryDate) < new Date() ? h("span", {}, time(t.expiryDate), " ", badge("expired")) : time(t.expiryDate);
  return h("tr", { dataset: { tag: t.idTag } },
    h("td", { class: "mono" }, t.idTag),
    h("td", {}, userLink(t.userId)),
    h("td", { class: "tag-status" }, badge(t.status)),
    h("td", {}, expiry),
    h("td", {}, tagActions(t, done, errorNode)));
}

function tagForm(prefix, userId, done) {
  const error = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    { id: `${prefix}-form`, class: "inline-form" },
    field({ name: "idTag", label: "idTag (up to 20 characters)", required: true }, prefix),
    userId ? null : field({ name: "userId", label: "User id", required: true }, prefix),
    field({ name: "status", label: "Status", type: "select", options: ["Accepted", "Blocked", "Expired", "Invalid"] }, prefix),
    field({ name: "expiryDate", label: "Expires (optional)", type: "datetime-local" }, prefix),
    h("button", { type: "submit" }, "Save idTag"),
    error,
  );
  onSubmit(form, error, async (v) => {
    const { idTag, ...rest } = v;
    if (userId) rest.userId = userId;
    if (rest.expiryDate) rest.expiryDate = new Date(rest.expiryDate).toISOString();
    await api("PUT", `/api/admin/id-tags/${enc(idTag)}`, rest);
    form.reset();
    done();
  });
  return form;
}

async function user(main, id) {
  const info = h("div");
  const tags = h("tbody", { id: "user-tags" });
  const wallets = h("tbody", { id: "wallets" });
  const tagError = h("p", { class: "error", role: "alert" });
  async function load() {
    const v = (await api("GET", `/api/admin/users/${enc(id)}`)).data;
    fill(info, dl([["Name", v.user.name], ["Email", dash(v.user.email)], ["Role", v.user.role], ["Battery", v.user.batteryCapacity ? `${v.user.batteryCapacity} kWh` : "60 kWh (default)"], ["Created", time(v.user.createdAt)]]));
    fill(tags, v.idTags.length ? v.idTags.map((t) => tagRow(t, load, tagError)) : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No idTags.")));
    fill(wallets, v.wallets.length ? v.wallets.map((w) => h("tr", {}, h("td", { class: "mono" }, w.walletAddress), h("td", {}, w.kind), h("td", { class: "balance" }, money(w.balance, w.currency)))) : h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No wallet yet.")));
  }
  const ledgerBody = h("tbody", { id: "ledger" });
  const ledgerBar = listBar({
    label: "Ledger",
    state: { offset: 0 },
    load: async ({ offset }) => {
      const r = await api("GET", `/api/admin/users/${enc(id)}/ledger${qs({ offset, limit: 25 })}`);
      fill(ledgerBody, r.data.map((m) => h("tr", {}, h("td", {}, time(m.createdAt)), h("td", {}, m.kind), h("td", { class: "mono" }, m.walletAddress), h("td", {}, m.account), h("td", { class: m.amount < 0 ? "neg" : "pos" }, money(m.amount, m.currency)), h("td", { class: "mono" }, m.reference))));
      return r.pagination;
    },
  });
  ledgerBar.bar.querySelector(".search").hidden = true;
  const creditError = h("p", { class: "error", role: "alert" });
  const credit = h(
    "form",
    { id: "credit-form", class: "inline-form" },
    field({ name: "amount", label: "Amount", type: "number", step: "any", min: 0, required: true }, "credit"),
    field({ name: "currency", label: "Currency", value: "EUR", required: true }, "credit"),
    field({ name: "walletAddress", label: "Wallet (optional; default)" }, "credit"),
    h("button", { type: "submit" }, "Credit wallet"),
    creditError,
  );
  onSubmit(credit, creditError, async (v) => {
    await api("POST", `/api/admin/users/${enc(id)}/wallet/credit`, v);
    credit.elements.amount.value = "";
    await load();
    ledgerBar.go(0);
  });
  const links = h("tbody");
  const checks = h("tbody");
  async function loadPayments() {
    const [l, c] = await Promise.all([
      api("GET", `/api/admin/payment-links${qs({ userId: id, limit: 20 })}`),
      api("GET", `/api/admin/balance-checks${qs({ userId: id, limit: 20 })}`),
    ]);
    fill(links, l.data.map(linkRow));
    fill(checks, c.data.map(checkRow));
  }
  fill(main,
    h("p", { class: "crumbs" }, h("a", { href: "#/users" }, "Users"), " / ", id),
    h("h1", {}, `User ${id}`),
    h("div", { class: "columns" },
      h("section", { class: "panel" }, info),
      h("section", { class: "panel", "aria-labelledby": "wallet-title" }, h("h2", { id: "wallet-title" }, "Wallets"), table(null, ["Wallet", "Kind", "Balance"], wallets), credit)),
    h("section", { class: "panel", "aria-labelledby": "tags-title" }, h("h2", { id: "tags-title" }, "idTags"), tagError,
      table(null, ["idTag", "User", "Status", "Expires", "Action"], tags), tagForm("user-tag", id, load)),
    h("section", { class: "panel", "aria-labelledby": "ledger-title" }, h("h2", { id: "ledger-title" }, "Ledger movements"), ledgerBar.bar,
      table(null, ["When", "Kind", "Wallet", "Account", "Amount", "Reference"], ledgerBody)),
    h("section", { class: "panel", "aria-labelledby": "pay-title" }, h("h2", { id: "pay-title" }, "Payment links"), table(null, LINK_HEADERS, links),
      h("h2", {}, "Balance checks"), table(null, CHECK_HEADERS, checks)),
  );
  await Promise.all([load(), ledgerBar.go(0), loadPayments()]);
  return {
    onReconnect: () => { load(); ledgerBar.reload(); loadPayments(); },
    onEvent(name, d) {
      if (name.startsWith("payment.") && d.userId === id) { load(); ledgerBar.reload(); loadPayments(); }
    },
  };
}

// ------------------------------------------------------------------ idTags

async function idTags(main, _parts, params) {
  const state = { q: params.get("q") || "", offset: 0 };
  const body = h("tbody", { id: "id-tags" });
  const error = h("p", { class: "error", role: "alert" });
  const bar = listBar({
    label: "Search idTags",
    placeholder: "Tag",
    state,
    load: async ({ q, offset }) => {
      const r = await api("GET", `/api/admin/id-tags${qs({ q, offset, limit: PAGE })}`);
      fill(body, r.data.map((t) => tagRow(t, () => bar.reload(), error)));
      return r.pagination;
    },
  });
  fill(main, h("h1", {}, "idTags"),
    h("section", { class: "panel", "aria-labelledby": "new-tag" }, h("h2", { id: "new-tag" }, "Create or update an idTag"), tagForm("tag", null, () => bar.reload())),
    h("section", { class: "panel" }, bar.bar, error, table(null, ["idTag", "User", "Status", "Expires", "Action"], body)));
  await bar.go(0);
  return { onReconnect: () => bar.reload() };
}

// ---------------------------------------------------------------- payments

const LINK_HEADERS = ["Created", "Driver", "Session", "Amount", "Provider", "Status", "Expires", "Paid"];
const CHECK_HEADERS = ["When", "Driver", "Wallet", "Chain", "Requested", "Balance", "Status", "Provider", "Error"];

function linkRow(l) {
  return h("tr", { dataset: { link: l.id } },
    h("td", {}, time(l.createdAt)), h("td", {}, userLink(l.userId)), h("td", { class: "mono" }, l.sessionId),
    h("td", {}, money(l.amount, l.currency)), h("td", {}, l.provider), h("td", {}, badge(l.status)),
    h("td", {}, time(l.expiresAt)), h("td", {}, time(l.paidAt)));
}

function checkRow(c) {
  return h("tr", {},
    h("td", {}, time(c.createdAt)), h("td", {}, userLink(c.userId)), h("td", { class: "mono" }, c.walletAddress), h("td", {}, c.chain),
    h("td", {}, money(c.requestedAmount, c.currency)), h("td", {}, money(c.actualBalance, c.currency)), h("td", {}, badge(c.status)),
    h("td", {}, c.provider), h("td", {}, dash(c.errorMessage)));
}

async function payments(main) {
  const linkState = { offset: 0 };
  const linkBody = h("tbody", { id: "links" });
  const linkFilter = field({ name: "status", label: "Link status", type: "select", options: ["", "pending", "paid", "expired", "failed"] }, "links");
  const linkBar = listBar({
    label: "Links",
    state: linkState,
    load: async ({ offset }) => {
      const r = await api("GET", `/api/admin/payment-links${qs({ offset, limit: PAGE, status: linkFilter.querySelector("select").value })}`);
      fill(linkBody, r.data.map(linkRow));
      return r.pagination;
    },
  });
  linkBar.bar.querySelector(".search").replaceWith(linkFilter);
  linkFilter.addEventListener("change", () => linkBar.go(0));

  const checkState = { offset: 0 };
  const checkBody = h("tbody", { id: "checks" });
  const checkFilter = field({ name: "status", label: "Check status", type: "select", options: ["", "SUFFICIENT", "INSUFFICIENT", "ERROR"] }, "checks");
  const checkBar = listBar({
    label: "Checks",
    state: checkState,
    load: async ({ offset }) => {
      const r = await api("GET", `/api/admin/balance-checks${qs({ offset, limit: PAGE, status: checkFilter.querySelector("select").value })}`);
      fill(checkBody, r.data.map(checkRow));
      return r.pagination;
    },
  });
  checkBar.bar.querySelector(".search").replaceWith(checkFilter);
  checkFilter.addEventListener("change", () => checkBar.go(0));

  fill(main, h("h1", {}, "Payments"),
    h("section", { class: "panel", "aria-labelledby": "links-title" }, h("h2", { id: "links-title" }, "Payment links"), linkBar.bar, table(null, LINK_HEADERS, linkBody)),
    h("section", { class: "panel", "aria-labelledby": "checks-title" }, h("h2", { id: "checks-title" }, "Balance checks"), checkBar.bar, table(null, CHECK_HEADERS, checkBody)));
  await Promise.all([linkBar.go(0), checkBar.go(0)]);
  return {
    onReconnect: () => { linkBar.reload(); checkBar.reload(); },
    onEvent(name) {
      if (name.startsWith("payment.") && linkState.offset === 0) linkBar.reload();
      if (name === "session.started" && checkState.offset === 0) checkBar.reload();
    },
  };
}

export const routes = {
  chargers: (main, parts, params) => (parts[0] ? charger(main, parts) : chargers(main, parts, params)),
  sessions,
  transactions: transaction,
  anomalies: anomaliesView,
  users,
  "id-tags": idTags,
  payments,
};
