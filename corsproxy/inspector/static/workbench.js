// corsproxy inspector, the workbench: filters kept in the URL, pause and clear, keyboard
// navigation, bodies, copy as cURL / fetch, edit and resend, HAR export, "mock this".
// Plain JavaScript, no dependencies; inspector.js calls into it.
"use strict";

// ---- filters (in the URL, so a reload or a shared link keeps them) ----------------------

const filters = { text: "", refused: false, errors: false, method: "", status: "" };

function readFilters() {
  const query = new URLSearchParams(location.search);
  filters.text = query.get("q") ?? "";
  filters.refused = query.get("refused") === "1";
  filters.errors = query.get("errors") === "1";
  filters.method = query.get("method") ?? "";
  filters.status = query.get("status") ?? "";
  $("#filter-text").value = filters.text;
  $("#filter-refused").checked = filters.refused;
  $("#filter-errors").checked = filters.errors;
  $("#filter-method").value = filters.method;
  $("#filter-status").value = filters.status;
}

function writeFilters() {
  const query = new URLSearchParams();
  if (filters.text) query.set("q", filters.text);
  if (filters.refused) query.set("refused", "1");
  if (filters.errors) query.set("errors", "1");
  if (filters.method) query.set("method", filters.method);
  if (filters.status) query.set("status", filters.status);
  const search = query.toString();
  history.replaceState(null, "", search ? `?${search}` : location.pathname);
}

function matchesFilters(summary) {
  if (filters.refused && summary.cors.allowed) return false;
  if (filters.errors && !(summary.status >= 400 || summary.status === 0 || summary.error)) return false;
  if (filters.method && summary.method !== filters.method) return false;
  if (filters.status && String(summary.status)[0] !== filters.status) return false;
  if (!filters.text) return true;
  const path = summary.query ? `${summary.path}?${summary.query}` : summary.path;
  const decision = `${summary.cors.allowed ? "allowed" : "refused"} ${summary.cors.reason ?? ""}`;
  const haystack = [summary.method, path, summary.status, summary.origin ?? "", decision, summary.source]
    .join(" ")
    .toLowerCase();
  return filters.text.toLowerCase().split(/\s+/).filter(Boolean).every((word) => haystack.includes(word));
}

function applyFilters() {
  let shown = 0;
  for (const row of rows.values()) {
    row.hidden = !matchesFilters(row.summary);
    if (!row.hidden) shown += 1;
  }
  const filtering = filters.text || filters.refused || filters.errors || filters.method || filters.status;
  $("#filter-count").textContent = filtering ? `${shown} of ${rows.size} shown` : "";
}

function onFilterChange() {
  filters.text = $("#filter-text").value.trim();
  filters.refused = $("#filter-refused").checked;
  filters.errors = $("#filter-errors").checked;
  filters.method = $("#filter-method").value;
  filters.status = $("#filter-status").value;
  writeFilters();
  applyFilters();
}

function visibleIds() {
  return [...rows.values()].filter((row) => !row.hidden).map((row) => row.summary.id);
}

// ---- pause and clear -----------------------------------------------------------------

let paused = false;
const held = []; // exchanges that came while paused: counted, not lost

// Called by inspector.js for each new exchange; false keeps it back for now.
function admitExchange(summary) {
  if (!paused) return true;
  held.push(summary);
  $("#pause-count").textContent = `${held.length} new`;
  return false;
}

function togglePause() {
  paused = !paused;
  $("#pause").textContent = paused ? "Resume" : "Pause";
  $("#pause").setAttribute("aria-pressed", String(paused));
  if (!paused) {
    for (const summary of held.splice(0)) addExchange(summary);
    $("#pause-count").textContent = "";
  }
}

async function clearRecord() {
  const response = await fetch(api("exchanges"), { method: "DELETE" });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  for (const row of rows.values()) row.remove();
  rows.clear();
  held.length = 0;
  $("#pause-count").textContent = "";
  $("#empty").hidden = false;
  closeDetail();
  applyFilters();
}

// ---- keyboard: arrows move through rows, Enter opens, Esc closes -----------------------

function onRowsKey(event) {
  const row = event.target.closest("tr");
  if (!row || (event.key !== "ArrowDown" && event.key !== "ArrowUp")) return;
  event.preventDefault();
  let next = event.key === "ArrowDown" ? row.nextElementSibling : row.previousElementSibling;
  while (next && next.hidden) next = event.key === "ArrowDown" ? next.nextElementSibling : next.previousElementSibling;
  if (next) next.focus();
}

function closeDetail() {
  $("#detail").hidden = true;
  const row = rows.get(selectedId);
  selectedId = null;
  for (const each of rows.values()) each.setAttribute("aria-selected", "false");
  if (row) row.focus();
}

// ---- bodies ----------------------------------------------------------------------------

function sizeText(bytes) {
  return bytes < 1024 ? `${bytes} B` : bytes < 1048576 ? `${(bytes / 1024).toFixed(1)} KiB` : `${(bytes / 1048576).toFixed(1)} MiB`;
}

function hexPreview(buffer) {
  const bytes = new Uint8Array(buffer.slice(0, 512));
  const lines = [];
  for (let offset = 0; offset < bytes.length; offset += 16) {
    const part = [...bytes.slice(offset, offset + 16)];
    const hex = part.map((byte) => byte.toString(16).padStart(2, "0")).join(" ");
    const text = part.map((byte) => (byte >= 32 && byte < 127 ? String.fromCharCode(byte) : ".")).join("");
    lines.push(`${offset.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${text}`);
  }
  return lines.join("\n") + (buffer.byteLength > 512 ? `\n… ${buffer.byteLength - 512} more bytes` : "");
}

async function showBody(target, id, which, body) {
  const section = $(target);
  if (!body) {
    section.replaceChildren(el("p", { className: "muted" }, "No body kept."));
    return;
  }
  const sizes = [
    `${sizeText(body.size)} over the wire` + (body.content_encoding ? ` (${body.content_encoding})` : ""),
    body.content_encoding ? `${sizeText(body.decoded_size)} decoded` : "",
    body.cut ? `kept the first ${sizeText(body.kept)} (inspector.max_body)` : "",
    body.problem ?? "",
  ].filter(Boolean);
  const meta = el("p", { className: "muted body-meta" }, sizes.join(" · "));
  if (body.size === 0) {
    section.replaceChildren(meta);
    return;
  }
  const response = await fetch(api(`exchanges/${id}/body/${which}`), { cache: "no-store" });
  if (!response.ok) {
    section.replaceChildren(meta, el("p", { className: "muted" }, "The body is no longer kept."));
    return;
  }
  let view;
  if (body.kind === "image") {
    view = el("img", { className: "body-image", alt: `${which} body`, src: URL.createObjectURL(await response.blob()) });
  } else if (body.kind === "binary") {
    view = el("pre", { className: "body hex" }, hexPreview(await response.arrayBuffer()));
  } else {
    let text = await response.text();
    if (body.kind === "json") {
      try {
        text = JSON.stringify(JSON.parse(text), null, 2);
      } catch {
        // shown as the text it is
      }
    }
    view = el("pre", { className: `body ${body.kind}` }, text);
  }
  section.replaceChildren(meta, view);
}

async function requestBodyText(detail) {
  if (!detail.request_body || detail.request_body.kind === "binary" || detail.request_body.kind === "image") return null;
  const response = await fetch(api(`exchanges/${detail.id}/body/request`), { cache: "no-store" });
  return response.ok ? response.text() : null;
}

// ---- copy as cURL and as fetch -----------------------------------------------------------

// Set by curl or the browser, or meaningless outside this exchange.
const NOT_COPIED = new Set(["host", "content-length", "connection", "accept-encoding", "keep-alive", "transfer-encoding"]);
// Headers a script may not set (Fetch standard, "forbidden request-header").
const FORBIDDEN = /^(accept-charset|accept-encoding|access-control-request-.*|connection|content-length|cookie|date|dnt|expect|host|keep-alive|origin|referer|te|trailer|transfer-encoding|upgrade|via|sec-.*|proxy-.*)$/i;

function shellQuote(text) {
  return `'${String(text).replaceAll("'", `'\\''`)}'`;
}

// For the upstream copy: $VAR references must expand, everything else stays literal.
function shellQuoteExpanding(text) {
  return `"${String(text).replace(/["\\`]/g, (c) => `\\${c}`)}"`;
}

function proxyUrl(detail) {
  const host = detail.request_headers.find(([name]) => name.toLowerCase() === "host")?.[1] ?? location.host;
  const query = new URLSearchParams(detail.query);
  query.delete(TRY_PARAM);
  const search = query.toString();
  return `${location.protocol}//${host}${detail.path}${search ? `?${search}` : ""}`;
}

function curlCommand(method, url, headers, body, quote) {
  const parts = ["curl", "--compressed"];
  if (method !== "GET" || body !== null) parts.push("-X", method);
  parts.push(quote(url));
  for (const [name, value] of headers) {
    if (!NOT_COPIED.has(name.toLowerCase())) parts.push("-H", quote(`${name}: ${value}`));
  }
  if (body !== null && body !== "") parts.push("--data-raw", quote(body));
  return parts.join(" ");
}

function fetchCall(method, url, headers, body) {
  const sent = Object.fromEntries(headers.filter(([name]) => !FORBIDDEN.test(name) && !NOT_COPIED.has(name.toLowerCase())));
  const init = { method };
  if (Object.keys(sent).length) init.headers = sent;
  if (body !== null && body !== "" && method !== "GET" && method !== "HEAD") init.body = body;
  if (headers.some(([name]) => name.toLowerCase() === "cookie")) init.credentials = "include";
  return `fetch(${JSON.stringify(url)}, ${JSON.stringify(init, null, 2)});`;
}

async function copyText(kind, detail) {
  const body = await requestBodyText(detail);
  let text;
  if (kind === "curl") text = curlCommand(detail.method, proxyUrl(detail), detail.request_headers, body, shellQuote);
  else if (kind === "fetch") text = fetchCall(detail.method, proxyUrl(detail), detail.request_headers, body);
  else {
    const upstream = detail.upstream_request;
    text =
      "# as corsproxy sent it upstream; injected values are $VAR references: export them first\n" +
      curlCommand(detail.method, upstream.url_with_references, upstream.headers_with_references, body, shellQuoteExpanding);
  }
  const shown = $("#detail-copy");
  shown.hidden = false;
  shown.dataset.kind = kind;
  shown.textContent = text;
  try {
    await navigator.clipboard.writeText(text);
    $("#detail-copy-note").textContent = "Copied to the clipboard.";
  } catch {
    $("#detail-copy-note").textContent = "Select the text below to copy it.";
  }
}

// ---- edit and resend -------------------------------------------------------------------

async function editAndResend(detail) {
  const url = new URL(proxyUrl(detail));
  $("#try-url").value = url.href;
  const method = $("#try-method");
  if (![...method.options].some((option) => option.value === detail.method)) method.append(el("option", {}, detail.method));
  method.value = detail.method;
  $("#try-headers").value = detail.request_headers
    .filter(([name]) => !FORBIDDEN.test(name) && !NOT_COPIED.has(name.toLowerCase()))
    .map(([name, value]) => `${name}: ${value}`)
    .join("\n");
  $("#try-body").value = (await requestBodyText(detail)) ?? "";
  if (detail.request_headers.some(([name]) => name.toLowerCase() === "cookie")) $("#try-credentials").value = "include";
  $("#try").scrollIntoView({ block: "start" });
  $("#try-url").focus();
}

// ---- mock this ---------------------------------------------------------------------------

async function mockThis(detail) {
  const response = await fetch(api("mocks"), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ exchange: detail.id }),
  });
  const answer = await response.json();
  const shown = $("#detail-mock");
  shown.hidden = false;
  if (!response.ok) {
    shown.replaceChildren(el("p", { className: "error" }, answer.error + (answer.problems ? `: ${answer.problems.join("; ")}` : "")));
    return;
  }
  shown.replaceChildren(
    el("p", {}, `The next identical request is answered by ${answer.label}, until you remove it. To keep it, paste this into the config file:`),
    el("pre", { className: "mock-yaml" }, answer.yaml),
  );
  await loadMocks();
}

async function loadMocks() {
  const listing = await getJson("mocks");
  $("#mocks-panel").hidden = listing.added.length === 0;
  $("#mocks-list").replaceChildren(
    ...listing.added.map((mock) => {
      const remove = el("button", { type: "button", className: "small" }, "Remove");
      remove.addEventListener("click", async () => {
        await fetch(api(`mocks/${mock.number}`), { method: "DELETE" });
        await loadMocks();
      });
      const entry = mock.entry;
      return el(
        "li",
        {},
        el("code", {}, mock.label),
        ` ${entry.method ?? "any"} ${entry.path}${entry.query ? "?" + new URLSearchParams(entry.query) : ""} → ${entry.status} `,
        remove,
      );
    }),
  );
}

// ---- HAR export ------------------------------------------------------------------------

function exportHar(filteredOnly) {
  const link = el("a", { download: "corsproxy.har" });
  link.href = filteredOnly ? api(`har?ids=${visibleIds().join(",")}`) : api("har");
  document.body.append(link);
  link.click();
  link.remove();
}

// ---- wiring --------------------------------------------------------------------------------

let current = null; // the exchange the detail view shows

async function showWorkbench(detail) {
  current = detail;
  $("#detail-copy").hidden = true;
  $("#detail-copy-note").textContent = "";
  $("#detail-mock").hidden = true;
  $("#copy-upstream").hidden = detail.upstream_request === null;
  $("#mock-this").disabled = detail.preflight;
  await Promise.all([
    showBody("#detail-request-body", detail.id, "request", detail.request_body),
    showBody("#detail-response-body", detail.id, "response", detail.response_body),
  ]);
}

function setUpWorkbench() {
  readFilters();
  for (const id of ["#filter-text", "#filter-refused", "#filter-errors", "#filter-method", "#filter-status"]) {
    $(id).addEventListener("input", onFilterChange);
  }
  $("#pause").addEventListener("click", togglePause);
  $("#clear").addEventListener("click", () => clearRecord().catch(() => {}));
  $("#export-all").addEventListener("click", () => exportHar(false));
  $("#export-filtered").addEventListener("click", () => exportHar(true));
  $("#exchanges tbody").addEventListener("keydown", onRowsKey);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("#detail").hidden) closeDetail();
  });
  $("#detail-close").addEventListener("click", closeDetail);
  $("#copy-curl").addEventListener("click", () => current && copyText("curl", current));
  $("#copy-fetch").addEventListener("click", () => current && copyText("fetch", current));
  $("#copy-upstream").addEventListener("click", () => current && copyText("upstream", current));
  $("#resend").addEventListener("click", () => current && editAndResend(current));
  $("#mock-this").addEventListener("click", () => current && mockThis(current));
  loadMocks().catch(() => {});
}
