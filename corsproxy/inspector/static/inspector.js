// corsproxy inspector: the live exchange list, one exchange's headers, and the "try" panel.
// Plain browser JavaScript, no build step. Every value from the network is put in the page
// with textContent, never as HTML: paths, origins and header values are chosen by whoever
// sends requests through the proxy.
"use strict";

const MAX_ROWS = 500;
const BODY_SHOWN = 2000;
const TRY_PARAM = "corsproxy_try";

const $ = (selector) => document.querySelector(selector);
const api = (path) => new URL("api/" + path, document.baseURI);

const rows = new Map(); // exchange id -> <tr>
let selectedId = null;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) {
    node.append(child instanceof Node ? child : String(child ?? ""));
  }
  return node;
}

async function getJson(path) {
  const response = await fetch(api(path), { cache: "no-store" });
  if (!response.ok) {
    throw new Error(`${path}: HTTP ${response.status} ${await response.text()}`);
  }
  return response.json();
}

function clock(seconds) {
  const date = new Date(seconds * 1000);
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

function decisionText(cors) {
  return cors.allowed ? `✓ ${cors.reason}` : `✗ refused: ${cors.reason}`;
}

// The decision, and below it any error, unless the error only repeats the refusal.
function decisionView(tag, summary) {
  const view = el(tag, { className: `decision ${summary.cors.allowed ? "allowed" : "refused"}` }, decisionText(summary.cors));
  if (summary.error && !summary.error.includes(summary.cors.reason)) {
    view.append(el("div", { className: "error" }, `error: ${summary.error}`));
  }
  return view;
}

function fillHeaders(table, pairs) {
  const body = table.tBodies[0];
  body.replaceChildren(...pairs.map(([name, value]) => el("tr", {}, el("td", {}, name), el("td", {}, value))));
}

// ---- the live list ------------------------------------------------------------------

// An answer that stood in for the upstream's: a mock ("mock[0]") or a recorded one ("replay").
function standIn(source) {
  return source.startsWith("mock") || source === "replay";
}

function exchangeRow(summary) {
  const path = summary.query ? `${summary.path}?${summary.query}` : summary.path;
  const row = el(
    "tr",
    { className: "fresh" },
    el("td", { className: "time" }, clock(summary.time)),
    el("td", { className: "method" }, summary.method),
    el("td", { className: "path", title: path }, path),
    el("td", { className: "origin" }, summary.origin ?? "—"),
    el("td", { className: `status status-${String(summary.status)[0]}` }, summary.status),
    el("td", { className: "duration" }, `${summary.duration_ms.toFixed(1)} ms`),
    el(
      "td",
      { className: "preflight" },
      summary.preflight ? el("span", { className: "badge" }, "preflight") : "",
      standIn(summary.source) ? el("span", { className: "badge mock" }, summary.source) : "",
      summary.simulated ? el("span", { className: "badge simulated", title: `simulated: ${summary.simulated}` }, "simulated") : "",
    ),
    decisionView("td", summary),
  );
  row.dataset.id = summary.id;
  row.summary = summary; // for the filters (workbench.js)
  row.hidden = !matchesFilters(summary);
  row.tabIndex = 0;
  row.setAttribute("aria-selected", String(summary.id === selectedId));
  row.addEventListener("click", () => selectExchange(summary.id));
  row.addEventListener("keydown", (event) => {
    if (event.key === "Enter") selectExchange(summary.id);
  });
  return row;
}

function addExchange(summary) {
  if (rows.has(summary.id) || !admitExchange(summary)) return;
  const row = exchangeRow(summary);
  rows.set(summary.id, row);
  // Ids only grow, so the newest row goes on top.
  $("#exchanges tbody").prepend(row);
  $("#empty").hidden = true;
  if (rows.size > MAX_ROWS) {
    const oldest = Math.min(...rows.keys());
    rows.get(oldest).remove();
    rows.delete(oldest);
  }
  applyFilters();
}

function connect() {
  const live = $("#live");
  const source = new EventSource(api("events"));
  source.addEventListener("open", () => {
    live.dataset.state = "live";
    live.textContent = "live";
  });
  source.addEventListener("error", () => {
    // EventSource reconnects by itself and sends Last-Event-ID, so nothing is missed.
    live.dataset.state = "connecting";
    live.textContent = "reconnecting…";
  });
  source.addEventListener("snapshot", (event) => {
    for (const summary of JSON.parse(event.data).reverse()) addExchange(summary);
  });
  source.addEventListener("exchange", (event) => addExchange(JSON.parse(event.data)));
}

async function selectExchange(id) {
  selectedId = id;
  for (const [rowId, row] of rows) row.setAttribute("aria-selected", String(rowId === id));
  let detail;
  try {
    detail = await getJson(`exchanges/${id}`);
  } catch (error) {
    showDetailError(id, error);
    return;
  }
  if (selectedId !== id) return; // another row was clicked meanwhile
  const panel = $("#detail");
  panel.hidden = false;
  $("#detail-title").textContent =
    `Exchange ${detail.id}: ${detail.preflight ? "preflight " : ""}${detail.method} ${detail.path} → ${detail.status}` +
    (standIn(detail.source) ? ` (answered by ${detail.source})` : "") +
    (detail.simulated ? ` — simulated: ${detail.simulated}` : "");
  const decision = $("#detail-decision");
  decision.className = `decision ${detail.cors.allowed ? "allowed" : "refused"}`;
  decision.textContent = decisionText(detail.cors);
  const browser = detail.browser;
  const verdict = $("#detail-browser");
  verdict.hidden = browser === null;
  if (browser !== null) {
    verdict.className = `verdict ${browser.allowed ? "allowed" : "refused"}`;
    const credentials = browser.credentials_assumed ? "with credentials" : "without credentials";
    let text = browser.allowed
      ? `The browser accepts this answer (${credentials}).`
      : `The browser rejects this answer (${credentials}): ` +
        browser.findings.map((finding) => `${finding.code}: ${finding.message}`).join("; ");
    const other = browser.with_credentials;
    if (other && other.allowed !== browser.allowed) {
      // No Cookie was sent, so the credentials mode is unknown: say what the other one does.
      text += other.allowed
        ? " With credentials (credentials: 'include', withCredentials) it would accept it."
        : " With credentials (credentials: 'include', withCredentials) it would reject it: " +
          other.findings.map((finding) => `${finding.code}: ${finding.message}`).join("; ");
    }
    verdict.textContent = text;
  }
  $("#detail-error").hidden = !detail.error;
  $("#detail-error").textContent = detail.error ? `Error: ${detail.error}` : "";
  fillHeaders($("#detail-request"), detail.request_headers);
  fillHeaders($("#detail-response"), detail.response_headers);
  const upstream = detail.upstream_request;
  $("#detail-upstream").hidden = upstream === null;
  $("#detail-not-forwarded").hidden = upstream !== null;
  $("#detail-upstream-url").textContent = upstream ? upstream.url : "";
  fillHeaders($("#detail-upstream"), upstream ? upstream.headers : []);
  await showWorkbench(detail);
}

function showDetailError(id, error) {
  $("#detail").hidden = false;
  $("#detail-title").textContent = `Exchange ${id}`;
  $("#detail-error").hidden = false;
  $("#detail-error").textContent = String(error.message);
}

// ---- routes and rules -----------------------------------------------------------------

async function loadConfig() {
  const config = await getJson("config");
  $("#version").textContent = `corsproxy ${config.version}`;
  $("#config-source").textContent = config.source;
  $("#routes tbody").replaceChildren(
    ...config.routes.map((route) =>
      el(
        "tr",
        {},
        el("td", { className: "mono" }, route.path),
        el("td", { className: "mono" }, route.upstream),
        el("td", { className: "mono" }, route.request_headers.map(([name, value]) => `${name}: ${value}`).join(", ")),
      ),
    ),
  );
  $("#rules tbody").replaceChildren(
    ...config.rules.map((rule) =>
      el(
        "tr",
        {},
        el("td", {}, `rules[${rule.index}]`, rule.line ? el("small", { className: "muted" }, ` line ${rule.line}`) : ""),
        el("td", { className: "mono" }, rule.path),
        el("td", { className: "mono" }, rule.origins.join(" ")),
        el("td", { className: "mono" }, rule.allow_methods.join(", ")),
        el("td", { className: "mono" }, rule.allow_headers.join(", ") || "—"),
        el("td", { className: "mono" }, rule.expose_headers.join(", ") || "—"),
        el("td", {}, rule.allow_credentials ? "yes" : "no"),
      ),
    ),
  );
  const url = $("#try-url");
  if (!url.value && config.routes.length) {
    url.value = new URL(config.routes[0].path, location.origin).href;
  }
  showRejectedReload(config.rejected_reload);
}

// The simulated network: a switch per entry and the offline switch, each a PUT to the API.
function simulateEffect(entry) {
  const parts = [];
  if (entry.latency) parts.push(`latency ${entry.latency}`);
  if (entry.throttle) parts.push(`throttle ${entry.throttle}`);
  if (entry.fail) {
    const how = entry.fail.every ? `every ${entry.fail.every}` : `rate ${entry.fail.rate}`;
    const what = entry.fail.mode === "status" ? String(entry.fail.status) : entry.fail.mode;
    parts.push(`fail ${what}, ${how}` + (entry.fail.retry_after != null ? `, Retry-After ${entry.fail.retry_after}` : ""));
  }
  return parts.join("; ");
}

async function putSwitch(which, enabled) {
  const response = await fetch(api(`simulate/${which}`), {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ enabled }),
  });
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${await response.text()}`);
  showSimulate(await response.json());
}

function switchFor(which, checked, label) {
  const input = el("input", { type: "checkbox", checked, title: label });
  input.setAttribute("aria-label", label);
  input.dataset.which = which;
  input.addEventListener("change", () => {
    putSwitch(which, input.checked).catch((error) => {
      input.checked = !input.checked;
      const shown = $("#simulate-error");
      shown.hidden = false;
      shown.textContent = `could not switch: ${error.message}`;
    });
  });
  return input;
}

function showSimulate(listing) {
  $("#simulate-error").hidden = true;
  const offline = $("#simulate-offline");
  offline.checked = listing.offline;
  const on = listing.entries.filter((entry) => entry.enabled).length;
  $("#simulate-summary").textContent = listing.offline
    ? "offline: every request is cut off"
    : `${on} of ${listing.entries.length} entries on`;
  $("#simulate-empty").hidden = listing.entries.length > 0;
  $("#simulate-entries tbody").replaceChildren(
    ...listing.entries.map((entry) =>
      el(
        "tr",
        {},
        el("td", {}, switchFor(entry.index, entry.enabled, `simulate[${entry.index}] on`)),
        el(
          "td",
          {},
          `simulate[${entry.index}]`,
          el("small", { className: "muted" }, entry.added ? " added for this run" : entry.line ? ` line ${entry.line}` : ""),
        ),
        el("td", { className: "mono" }, entry.path),
        el("td", { className: "mono" }, entry.method ? entry.method.join(", ") : "any"),
        el("td", {}, simulateEffect(entry)),
      ),
    ),
  );
}

async function loadSimulate() {
  showSimulate(await getJson("simulate"));
}

// A config edit that hot reload refused: shown until a good one loads, as in the terminal.
function showRejectedReload(rejected) {
  const banner = $("#reload-banner");
  if (!rejected) {
    banner.hidden = true;
    banner.replaceChildren();
    return;
  }
  banner.hidden = false;
  banner.replaceChildren(
    el("strong", {}, `A change to ${rejected.source} was rejected; still serving the last good config:`),
    el("ul", {}, ...rejected.errors.map((error) => el("li", { className: "mono" }, error))),
  );
}

// Routes, rules and a rejected reload stay as current as the terminal: the config is
// read again every few seconds (a reload changes it without a page reload).
const CONFIG_REFRESH_MS = 2000;

// ---- try a request ----------------------------------------------------------------------

function parseHeaders(text) {
  const headers = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const colon = line.indexOf(":");
    if (colon < 1) throw new Error(`not a "Name: value" header line: ${line}`);
    headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  return headers;
}

function showVerdict(allowed, text) {
  const verdict = $("#try-verdict");
  verdict.className = `verdict ${allowed ? "allowed" : "refused"}`;
  verdict.dataset.allowed = String(allowed);
  verdict.textContent = text;
}

async function tryRequest(event) {
  event.preventDefault();
  const button = $("#try-send");
  button.disabled = true;
  $("#try-result").hidden = false;
  $("#try-record").replaceChildren(el("p", { className: "muted" }, "Looking for the proxy's record…"));
  fillHeaders($("#try-headers-read"), []);
  $("#try-body-read").textContent = "";
  try {
    await sendTry();
  } finally {
    button.disabled = false;
  }
}

async function sendTry() {
  const method = $("#try-method").value;
  const nonce = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  let url;
  let init;
  try {
    url = new URL($("#try-url").value, location.href);
    url.searchParams.set(TRY_PARAM, nonce);
    init = { method, headers: parseHeaders($("#try-headers").value), credentials: $("#try-credentials").value };
  } catch (error) {
    showVerdict(false, `Not sent: ${error.message}`);
    $("#try-record").replaceChildren();
    return;
  }
  const body = $("#try-body").value;
  if (body && method !== "GET" && method !== "HEAD") init.body = body;

  let response = null;
  try {
    response = await fetch(url, init);
  } catch (error) {
    showVerdict(
      false,
      `Blocked: fetch() rejected with ${error.name}: ${error.message}. Browsers do not tell scripts why; ` +
        "the proxy's record below (if the request reached it) and the browser console do.",
    );
  }
  if (response !== null) {
    showVerdict(true, `Allowed: the script could read the response, status ${response.status} ${response.statusText}`);
    fillHeaders($("#try-headers-read"), [...response.headers]);
    const text = await response.text();
    $("#try-body-read").textContent = text.slice(0, BODY_SHOWN);
  }
  await showRecord(nonce, response !== null);
}

// The proxy records an exchange once its response is complete, which can be a moment after
// the browser has the body: look a few times before concluding it never arrived.
async function showRecord(nonce, expectActual) {
  const target = $("#try-record");
  let found = [];
  for (let attempt = 0; attempt < 10; attempt += 1) {
    const recent = await getJson("exchanges?limit=50");
    found = recent.filter((summary) => new URLSearchParams(summary.query).get(TRY_PARAM) === nonce);
    const complete = found.length > 0 && (!expectActual || found.some((summary) => !summary.preflight));
    if (complete) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (!found.length) {
    target.replaceChildren(
      el("p", { className: "muted" }, "No record: the request did not go through this proxy, or never left the browser."),
    );
    return;
  }
  const details = await Promise.all(found.reverse().map((summary) => getJson(`exchanges/${summary.id}`)));
  target.replaceChildren(...details.map(recordView));
}

function recordView(detail) {
  const upstream = detail.upstream_request;
  return el(
    "div",
    { className: "record" },
    el("h3", {}, `${detail.preflight ? "Preflight " : ""}${detail.method} → ${detail.status} (exchange ${detail.id})`),
    decisionView("div", detail),
    el("h3", {}, "Headers the browser sent"),
    headerTable(detail.request_headers),
    el("h3", {}, upstream ? `Headers the proxy sent to ${upstream.url}` : "Not forwarded upstream"),
    upstream ? headerTable(upstream.headers) : "",
  );
}

function headerTable(pairs) {
  const table = el("table", { className: "kv headers" }, el("tbody"));
  fillHeaders(table, pairs);
  return table;
}

document.addEventListener("DOMContentLoaded", () => {
  setUpWorkbench();
  $("#own-origin").textContent = location.origin;
  $("#try-form").addEventListener("submit", tryRequest);
  connect();
  loadConfig().catch((error) => {
    $("#config-source").textContent = `could not load the configuration: ${error.message}`;
  });
  setInterval(() => loadConfig().catch(() => {}), CONFIG_REFRESH_MS);
  $("#simulate-offline").addEventListener("change", (event) => {
    const box = event.target;
    putSwitch("offline", box.checked).catch((error) => {
      box.checked = !box.checked;
      $("#simulate-error").hidden = false;
      $("#simulate-error").textContent = `could not switch: ${error.message}`;
    });
  });
  loadSimulate().catch(() => {});
  setInterval(() => loadSimulate().catch(() => {}), CONFIG_REFRESH_MS);
});
