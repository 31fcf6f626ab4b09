// memproxyd's page: projects, usage charts, memory browser. Reads the admin API of the
// daemon that served it; every value is put in the page as text (never as HTML).
"use strict";

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

async function api(method, path, body) {
  const init = { method, headers: { accept: "application/json" } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (data.error && data.error.message) || response.statusText;
    throw new Error(`${method} ${path}: ${response.status} ${message}`);
  }
  return data;
}

function baseUrls(port) {
  const host = `${location.protocol}//${location.hostname}:${port}`;
  return { openai: `${host}/v1`, anthropic: host };
}

function copyable(text) {
  const button = el("button", { class: "copy", type: "button", title: "copy" }, "copy");
  button.addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText(text));
  return el("span", {}, el("code", {}, text), button);
}

async function loadStatus() {
  const status = await api("GET", "/admin/status");
  $("#status").textContent = `v${status.version} · up ${Math.round(status.uptime_s)} s · ` +
    `${status.sessions.count} sessions · memory ${status.memory.backend || "on"}`;
  const urls = baseUrls(status.gateway.port);
  const hint = $("#gateway-urls");
  hint.replaceChildren("Gateway (identity from x-memory-user-id): ", copyable(urls.openai),
    " ", copyable(urls.anthropic));
}

async function loadProjects() {
  const { projects } = await api("GET", "/admin/projects");
  const rows = projects.map((p) => {
    const urls = baseUrls(p.port);
    return el("tr", { "data-project": p.name },
      el("td", {}, p.name), el("td", { class: "num" }, p.port),
      el("td", { class: `state-${p.state}` }, p.state,
        p.error ? el("div", { class: "state-error" }, p.error +
          (p.retry_in != null ? ` (trying again in ${Math.ceil(p.retry_in)} s)` : "")) : ""),
      el("td", {}, copyable(urls.openai)), el("td", {}, copyable(urls.anthropic)),
      el("td", {}, (p.models || ["(access rules)"]).join(", ")));
  });
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", { colspan: 6 },
      "No projects yet: memproxyctl add-project NAME")));
  }
  $("#projects tbody").replaceChildren(...rows);
  $("#memory-users").replaceChildren(...projects.map((p) => el("option", { value: p.name })));
  if (!$("#memory-user").value && projects.length) $("#memory-user").value = projects[0].name;
}

// A horizontal bar chart in SVG: one bar per [label, value].
function barChart(items, format) {
  const ns = "http://www.w3.org/2000/svg";
  const rowHeight = 18, labelWidth = 120, width = 360;
  const height = Math.max(1, items.length) * rowHeight + 4;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", "100%");
  const max = Math.max(...items.map(([, v]) => v), 0) || 1;
  items.forEach(([label, value], i) => {
    const y = i * rowHeight + 2;
    const text = document.createElementNS(ns, "text");
    text.setAttribute("x", 0); text.setAttribute("y", y + 12);
    text.textContent = String(label).slice(0, 20);
    const bar = document.createElementNS(ns, "rect");
    bar.setAttribute("class", "bar"); bar.setAttribute("x", labelWidth);
    bar.setAttribute("y", y); bar.setAttribute("height", rowHeight - 5);
    bar.setAttribute("width", Math.max(1, (width - labelWidth - 70) * value / max));
    const figure = document.createElementNS(ns, "text");
    figure.setAttribute("x", labelWidth + (width - labelWidth - 70) * value / max + 4);
    figure.setAttribute("y", y + 12);
    figure.textContent = format(value);
    svg.append(text, bar, figure);
  });
  if (!items.length) {
    const text = document.createElementNS(ns, "text");
    text.setAttribute("x", 0); text.setAttribute("y", 12); text.textContent = "no calls";
    svg.append(text);
  }
  return svg;
}

const PALETTE = ["#3b6fd8", "#e07b39", "#2a9d8f", "#b5179e", "#8d99ae", "#e9c46a", "#6a4c93",
  "#d62828"];

// Stacked columns over days: one column per day, one colour per series (project or model).
function stackedChart(groups, seriesKey, valueKey, format) {
  const ns = "http://www.w3.org/2000/svg";
  const days = [...new Set(groups.map((g) => g.day))].sort();
  const series = [...new Set(groups.map((g) => g[seriesKey]))].sort();
  const width = 360, height = 150, left = 44, bottom = 22, legend = 14 * series.length;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + legend}`);
  svg.setAttribute("width", "100%");
  const totals = days.map((d) => groups.filter((g) => g.day === d)
    .reduce((sum, g) => sum + g[valueKey], 0));
  const top = Math.max(...totals, 0), max = top || 1;
  const step = Math.min(48, (width - left) / Math.max(days.length, 1));
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  add("text", { x: 0, y: 10 }, format(top));
  add("text", { x: 0, y: height - bottom }, format(0));
  days.forEach((day, i) => {
    let y = height - bottom;
    series.forEach((name, j) => {
      const found = groups.find((g) => g.day === day && g[seriesKey] === name);
      const h = found ? (height - bottom - 4) * found[valueKey] / max : 0;
      if (h > 0) {
        y -= h;
        add("rect", { x: left + i * step + 2, y, width: Math.max(2, step - 4), height: h,
          fill: PALETTE[j % PALETTE.length], "data-series": name }, undefined);
      }
    });
    add("text", { x: left + i * step + 2, y: height - 6 }, day.slice(5));
  });
  series.forEach((name, j) => {
    add("rect", { x: left, y: height + 14 * j + 2, width: 10, height: 10,
      fill: PALETTE[j % PALETTE.length] });
    add("text", { x: left + 14, y: height + 14 * j + 11 }, name);
  });
  if (!days.length) add("text", { x: left, y: 40 }, "no calls");
  return svg;
}

async function loadUsage() {
  const since = $("#since").value;
  const get = (by) => api("GET", `/admin/usage?by=${by}&since=${since}`);
  const [byDayProject, byDayModel, byProject, byModel] = await Promise.all(
    [get("day,project"), get("day,model"), get("project"), get("model")]);
  const usd = (v) => `$${v.toFixed(4)}`;
  $("#chart-day-project").replaceChildren(
    stackedChart(byDayProject.groups, "project", "calls", (v) => String(Math.round(v))));
  $("#chart-day-model").replaceChildren(stackedChart(byDayModel.groups, "model", "cost_usd", usd));
  $("#chart-project").replaceChildren(
    barChart(byProject.groups.map((g) => [g.project, g.cost_usd]), usd));
  $("#chart-model").replaceChildren(barChart(byModel.groups.map((g) => [g.model, g.cost_usd]), usd));
  const keys = ["calls", "errors", "prompt_tokens", "completion_tokens", "cached_tokens",
    "cache_write_tokens"];
  $("#usage tbody").replaceChildren(...byModel.groups.map((g) => el("tr", {},
    el("td", {}, g.model), ...keys.map((k) => el("td", { class: "num" }, g[k])),
    el("td", { class: "num" }, g.cost_usd.toFixed(6)),
    el("td", { class: "num" }, g.latency_p50_ms), el("td", { class: "num" }, g.latency_p95_ms))));
}

// The memory browser: one owner (a project or user id, or the personal scope), newest first
// a page at a time (PAGE memories, the cursors of the pages before kept to go back), or the
// best matches of a search; each memory edited in place, pinned, promoted or deleted.
const PAGE = 50;
const browser = { user: "", scope: "project", query: "", cursors: [null], page: 0,
  total: 0, next: null };

function owner() {
  return browser.scope === "personal"
    ? { scope: "personal" } : { user_id: browser.user, scope: "project" };
}

function ownerQuery() {
  return new URLSearchParams(owner()).toString();
}

function memoryPath(memory, action = "") {
  return `/admin/memories/${encodeURIComponent(memory.id)}${action}`;
}

function button(label, cls, onclick) {
  return el("button", { type: "button", class: cls, onclick: guarded(onclick) }, label);
}

function memoryItem(memory) {
  const when = String(memory.created_at || "").slice(0, 16).replace("T", " ");
  const content = el("div", { class: "content" },
    memory.pinned ? el("span", { class: "mark" }, "pinned") : "", memory.content);
  const meta = el("div", { class: "meta" }, when,
    memory.scope === "personal" ? " · personal" : "",
    memory.score !== undefined ? ` · score ${memory.score.toFixed(3)}` : "");
  const item = el("li", { "data-memory-id": memory.id, class: memory.pinned ? "pinned" : "" });
  const replace = (updated) => item.replaceWith(memoryItem({ ...memory, ...updated }));
  const actions = el("div", { class: "actions" },
    button("Edit", "edit", async () => {
      const text = el("textarea", { class: "edit-text" }, memory.content);
      content.replaceChildren(text, button("Save", "save", async () => {
        replace(await api("PATCH", memoryPath(memory), { ...owner(), content: text.value }));
        $("#memory-note").textContent = `edited ${memory.id}`;
      }), button("Cancel", "cancel", async () => replace({})));
      text.focus();
    }),
    button(memory.pinned ? "Unpin" : "Pin", "pin", async () => {
      replace(await api("PATCH", memoryPath(memory), { ...owner(), pinned: !memory.pinned }));
      $("#memory-note").textContent = `${memory.pinned ? "unpinned" : "pinned"} ${memory.id}`;
    }),
    memory.scope === "personal" ? "" : button("Make personal", "promote", async () => {
      if (!confirm("Move this memory to the personal scope (every project)?")) return;
      await api("POST", memoryPath(memory, "/promote"), { user_id: browser.user });
      item.remove();
      $("#memory-note").textContent = `${memory.id} is now personal`;
    }),
    button("Delete", "delete", async () => {
      if (!confirm("Delete this memory?")) return;
      await api("DELETE", `${memoryPath(memory)}?${ownerQuery()}`);
      item.remove();
      browser.total -= 1;
      showPage();
      $("#memory-note").textContent = `deleted ${memory.id}`;
    }));
  item.append(content, meta, actions);
  return item;
}

function showPage() {
  const shown = $("#memories").children.length;
  const first = browser.page * PAGE;
  const who = browser.scope === "personal" ? "the personal scope" : browser.user;
  $("#memory-page").textContent = browser.query
    ? `${shown} found in ${who}`
    : shown ? `memories ${first + 1}–${first + shown} of ${browser.total} of ${who}`
      : `0 memories of ${who}`;
  $("#memory-newer").disabled = browser.query !== "" || browser.page === 0;
  $("#memory-older").disabled = browser.query !== "" || !browser.next;
}

async function loadPage() {
  const cursor = browser.cursors[browser.page];
  const found = browser.query
    ? (await api("POST", "/admin/memories/search",
      { ...owner(), query: browser.query, limit: PAGE })).results
    : await (async () => {
      const data = await api("GET", `/admin/memories?${ownerQuery()}&limit=${PAGE}` +
        (cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""));
      browser.total = data.total ?? data.data.length;
      browser.next = data.next_cursor;
      browser.cursors[browser.page + 1] = data.next_cursor;
      return data.data;
    })();
  $("#memories").replaceChildren(...found.map(memoryItem));
  showPage();
}

async function loadMemories(event) {
  if (event) event.preventDefault();
  browser.user = $("#memory-user").value.trim();
  browser.scope = $("#memory-scope").value;
  browser.query = $("#memory-query").value.trim();
  browser.cursors = [null];
  browser.page = 0;
  if (!browser.user && browser.scope === "project") return;
  $("#memory-note").textContent = "";
  await loadPage();
}

async function addMemory(event) {
  event.preventDefault();
  if (!browser.user && browser.scope === "project") await loadMemories();
  const content = $("#memory-new").value;
  const [memory] = (await api("POST", "/admin/memories",
    { ...owner(), content, pinned: $("#memory-new-pinned").checked })).data;
  $("#memory-new").value = "";
  $("#memory-new-pinned").checked = false;
  browser.query = "";
  $("#memory-query").value = "";
  browser.cursors = [null];
  browser.page = 0;
  await loadPage();
  $("#memory-note").textContent = `added ${memory.id}`;
}

async function turnPage(step) {
  browser.page = Math.max(0, browser.page + step);
  await loadPage();
}

function whyTurn(turn) {
  const shown = turn.memories.map((m) => el("li", {},
    el("span", { class: "meta" }, `score ${m.score.toFixed(3)} · ${m.id} · `),
    m.content === null ? "(deleted)" : m.content));
  return el("li", { class: turn.this_call ? "this-call" : "", "data-turn": turn.turn },
    el("div", { class: "meta" }, `turn ${turn.turn} · ${turn.created_at} · trace ${turn.trace_id}`,
      turn.this_call ? " · this call" : ""),
    turn.block ? el("pre", { class: "block" }, turn.block) : el("div", { class: "meta" }, "no block"),
    el("ul", {}, ...shown));
}

async function loadWhy(event) {
  if (event) event.preventDefault();
  const user = $("#why-user").value.trim();
  const trace = $("#why-trace").value.trim();
  const found = (await api("GET", `/admin/memories/injections?user_id=${encodeURIComponent(user)}` +
    `&trace_id=${encodeURIComponent(trace)}`)).data;
  $("#why-turns").replaceChildren(...found.map(whyTurn));
  $("#why-note").textContent = found.length
    ? `conversation ${found[0].conversation}: ${found.length} turns`
    : `no turn recalled by ${trace} (a later call of a turn reuses its first call's block)`;
}

function guarded(fn) {
  return (...args) => fn(...args).catch((error) => {
    $("#memory-note").textContent = error.message;
    console.error(error);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("#since").addEventListener("change", guarded(loadUsage));
  $("#memory-form").addEventListener("submit", guarded(loadMemories));
  $("#memory-add-form").addEventListener("submit", guarded(addMemory));
  $("#memory-older").addEventListener("click", guarded(() => turnPage(1)));
  $("#memory-newer").addEventListener("click", guarded(() => turnPage(-1)));
  $("#why-form").addEventListener("submit", guarded(loadWhy));
  guarded(loadStatus)();
  guarded(async () => { await loadProjects(); await loadMemories(); })();
  guarded(loadUsage)();
});
