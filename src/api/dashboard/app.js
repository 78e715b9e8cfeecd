// Cutover's dashboard: a view of the API this page was served by, and its buttons.
//
// Why it is built this way: the page holds no data of its own. Every figure comes from
// `GET /api/v1/services` (polled once a second) and every button is one API call, so
// the dashboard can show nothing the API would not and do nothing it would refuse.
// The token is kept in this tab's sessionStorage and sent as a bearer header (never a
// cookie, so another site cannot make the browser act with it); all text is written
// with textContent, never parsed as HTML.
"use strict";

const POLL_MS = 1000;
// The recent deployments change less often than the figures: read every few polls.
const HISTORY_EVERY = 5;
const HISTORY_LIMIT = 5;
const TOKEN_KEY = "cutover-token";
const ACTIONS = [
  // [action, button label, what the confirmation says]
  ["promote", "Promote", "Send all traffic to the new release of %s now?"],
  ["pause", "Pause", "Hold the deployment of %s at its current step?"],
  ["resume", "Resume", "Resume the deployment of %s?"],
  ["abort", "Abort", "Abort the deployment of %s and return traffic to the previous release?"],
  ["rollback", "Rollback", "Roll %s back to its previous release?"],
];

const cards = new Map(); // service name -> { root, status, buttons, message, version }
let lastCounts = new Map(); // "service/slot" -> { requests, at }
let token = sessionStorage.getItem(TOKEN_KEY) || "";

class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (!res.ok) {
    const msg = json && json.error ? json.error.message : text || res.statusText;
    throw new ApiFailure(res.status, msg);
  }
  return json;
}

// el("td", { class: "num" }, "12") -> <td class="num">12</td>; strings become text.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// node.replaceChildren without the absent parts (it would write null as "null").
function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false && c !== ""));
}

function fact(label, value, attrs) {
  return el("span", attrs, label + " ", el("b", {}, value === null || value === undefined ? "—" : value));
}

function setConnection(text, isError) {
  const node = document.getElementById("connection");
  node.textContent = text;
  node.className = isError ? "error" : "";
}

function card(name) {
  let c = cards.get(name);
  if (c) return c;
  const status = el("div", { class: "status" });
  const version = el("input", { type: "text", placeholder: "version", "aria-label": "version to deploy", "data-role": "version" });
  const deploy = el("button", { type: "button", "data-action": "deploy" }, "Deploy");
  const buttons = { deploy };
  const row = el("div", { class: "actions" }, version, deploy);
  for (const [action, label] of ACTIONS) {
    buttons[action] = el("button", { type: "button", "data-action": action }, label);
    row.append(buttons[action]);
  }
  const message = el("p", { class: "message", role: "status", "data-role": "message" });
  const history = el("div", { class: "history", "data-role": "history" });
  const root = el("section", { class: "service", "data-service": name }, el("h2", {}, name), status, row, message, history);
  c = { root, status, buttons, message, version, history, busy: false, polls: 0, activeId: null };
  deploy.addEventListener("click", () => {
    const v = version.value.trim();
    if (!v) return say(c, "Enter the version to deploy.", true);
    if (!confirm(`Deploy version ${v} of ${name}?`)) return;
    act(c, name, "deploy", { version: v, triggered_by: "dashboard" });
  });
  for (const [action, , question] of ACTIONS) {
    buttons[action].addEventListener("click", () => {
      if (!confirm(question.replace("%s", name))) return;
      act(c, name, action, { triggered_by: "dashboard" });
    });
  }
  cards.set(name, c);
  document.getElementById("services").append(root);
  return c;
}

function say(c, text, isError) {
  c.message.textContent = text;
  c.message.className = "message" + (isError ? " error" : "");
}

async function act(c, name, action, body) {
  c.busy = true;
  setButtons(c, null);
  try {
    const res = await api("POST", `/api/v1/services/${encodeURIComponent(name)}/${action}`, body);
    const id = res && (res.deployment_id ?? (res.deployment && res.deployment.id));
    say(c, `${action} accepted` + (id !== undefined && id !== null ? `: deployment #${id}` : ""), false);
  } catch (e) {
    say(c, `${action} refused: ${e.message}`, true);
  } finally {
    c.busy = false;
    refresh();
  }
}

// Buttons a person can use now: deploy and rollback when no deployment runs; abort
// during one; promote, pause and resume while a canary is in its steps (the API
// refuses them otherwise, and would say so).
function setButtons(c, svc) {
  const running = !!(svc && svc.active_deployment);
  const cn = svc && svc.progress && svc.progress.canary;
  const inSteps = running && !!cn && cn.step !== null && cn.step !== undefined;
  const known = !!svc && !c.busy;
  c.buttons.deploy.disabled = !known || running;
  c.buttons.rollback.disabled = !known || running;
  c.buttons.abort.disabled = !known || !running;
  for (const a of ["promote", "pause", "resume"]) c.buttons[a].disabled = !known || !inSteps;
}

function perSecond(service, slot, requests) {
  const key = `${service}/${slot}`;
  const now = performance.now();
  const prev = lastCounts.get(key);
  lastCounts.set(key, { requests, at: now });
  if (!prev || now <= prev.at || requests < prev.requests) return null;
  return ((requests - prev.requests) * 1000) / (now - prev.at);
}

function trafficBar(svc) {
  const p = svc.progress;
  const d = svc.active_deployment;
  if (p && p.canary && d && d.target_slot && d.from_slot) {
    const w = Math.max(0, Math.min(100, Number(p.canary.weight) || 0));
    return el("div", { class: "traffic", "data-role": "traffic" },
      el("div", { class: d.from_slot, style: null, "data-weight": 100 - w, title: `${d.from_slot} ${100 - w}%` }, `${d.from_slot} ${100 - w}%`),
      el("div", { class: d.target_slot, "data-weight": w, title: `${d.target_slot} ${w}%` }, `${d.target_slot} ${w}%`));
  }
  if (!svc.live) return el("div", { class: "traffic", "data-role": "traffic" });
  return el("div", { class: "traffic", "data-role": "traffic" },
    el("div", { class: svc.live, "data-weight": 100, title: `${svc.live} 100%` }, `${svc.live} 100%`));
}

function widths(bar) {
  // Inline styles are refused by the page's CSP: widths are set through the DOM.
  for (const part of bar.children) part.style.flex = `0 0 ${part.getAttribute("data-weight")}%`;
  return bar;
}

function deploymentLine(label, d, p) {
  if (!d) return null;
  const parts = [`${label} #${d.id}: ${d.kind} ${d.version}`];
  if (d.target_slot) parts.push(`to ${d.target_slot}`);
  if (d.phase) parts.push(`phase ${d.phase}`);
  const line = el("div", { class: "deployment", "data-role": label.toLowerCase().replace(/ /g, "-") }, parts.join(", "));
  if (d.outcome) line.append(" — ", el("b", { class: `outcome-${d.outcome}`, "data-role": "outcome" }, d.outcome.replace("_", " ")));
  if (d.reason) line.append(el("div", {}, d.reason));
  if (p && p.canary && p.canary.step !== null && p.canary.step !== undefined) {
    const cn = p.canary;
    line.append(el("div", { "data-role": "canary" }, `canary step ${cn.step} of ${cn.steps}, new release at ${cn.weight}%`,
      cn.held ? el("span", { class: "held" }, ` (held: ${cn.held})`) : null));
  }
  if (p && p.window) {
    const w = p.window;
    const rate = w.error_rate === null || w.error_rate === undefined ? "—" : `${(100 * w.error_rate).toFixed(2)}%`;
    line.append(el("div", {}, `window: ${w.requests} requests, ${w.errors} errors (${rate}), p95 ${w.p95_ms ?? "—"} ms`));
  }
  if (p && p.watch_ends_at) {
    // Milliseconds since the epoch, by the daemon's clock.
    const left = Math.max(0, Math.round((Number(p.watch_ends_at) - Date.now()) / 1000));
    line.append(el("div", { "data-role": "watch" }, `watch ends in ${left} s`));
  }
  return line;
}

function render(svc) {
  const c = card(svc.name);
  const title = c.root.querySelector("h2");
  fill(title, svc.name, svc.environment ? el("span", { class: "env" }, svc.environment) : "");
  const facts = el("p", { class: "facts" },
    fact("live", svc.live, { "data-role": "live" }),
    fact("version", svc.live_version, { "data-role": "live-version" }),
    fact("router", svc.router),
    fact("listen", svc.listen));
  const rows = (svc.slots || []).map((s) => {
    const rate = perSecond(svc.name, s.slot, s.requests);
    const errPct = s.requests ? ((100 * s.errors) / s.requests).toFixed(2) + "%" : "—";
    return el("tr", { "data-slot": s.slot },
      el("td", {}, s.slot), el("td", { "data-role": "state" }, s.state), el("td", { "data-role": "version" }, s.version ?? "—"),
      el("td", {}, s.running ? "yes" : "no"),
      el("td", { class: "num", "data-role": "requests" }, s.requests),
      el("td", { class: "num" }, rate === null ? "—" : rate.toFixed(1)),
      el("td", { class: "num", "data-role": "errors" }, s.errors),
      el("td", { class: "num" }, errPct),
      el("td", { class: "num" }, s.in_flight),
      el("td", { class: "num" }, s.shield_retries ?? 0));
  });
  const table = el("table", {},
    el("thead", {}, el("tr", {}, ["slot", "state", "version", "running"].map((h) => el("th", {}, h)),
      ["requests", "req/s", "errors", "error %", "in flight", "shield retries"].map((h) => el("th", { class: "num" }, h)))),
    el("tbody", {}, rows));
  fill(
    c.status,
    facts,
    svc.drift ? el("p", { class: "drift" }, `Drift: the router sends traffic to ${svc.observed_live ?? "nothing"}, not ${svc.live}.`) : "",
    widths(trafficBar(svc)),
    table,
    deploymentLine("In progress", svc.active_deployment, svc.progress),
    svc.active_deployment ? "" : deploymentLine("Last", svc.last_deployment, null));
  setButtons(c, svc);
}

function when(ms) {
  return ms === null || ms === undefined ? "—" : new Date(Number(ms)).toLocaleString();
}

function took(d) {
  if (!d.finished_at || !d.started_at) return "—";
  return `${((Number(d.finished_at) - Number(d.started_at)) / 1000).toFixed(1)} s`;
}

// The last few deployments: who asked for what, and how each ended.
async function renderHistory(c, name) {
  const runs = await api("GET", `/api/v1/services/${encodeURIComponent(name)}/history?limit=${HISTORY_LIMIT}`);
  const rows = runs.map((d) => el("tr", { "data-deployment": d.id },
    el("td", { class: "num" }, `#${d.id}`), el("td", {}, d.kind), el("td", {}, d.version),
    el("td", {}, d.target_slot ?? "—"),
    el("td", { class: d.outcome ? `outcome-${d.outcome}` : "held", "data-role": "history-outcome" },
      d.outcome ? d.outcome.replace("_", " ") : `running (${d.phase})`),
    el("td", { "data-role": "history-by" }, d.triggered_by ?? "—"),
    el("td", {}, when(d.started_at)), el("td", { class: "num" }, took(d)),
    el("td", { class: "reason" }, d.reason ?? "")));
  fill(
    c.history,
    el("h3", {}, "Recent deployments"),
    rows.length ? el("table", {},
      el("thead", {}, el("tr", {}, ["#", "kind", "version", "slot", "outcome", "by", "started", "took", "reason"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)) : el("p", {}, "none yet"));
}

let polling = false;
async function refresh() {
  if (polling) return;
  polling = true;
  try {
    const services = await api("GET", "/api/v1/services");
    const seen = new Set();
    for (const svc of services) {
      seen.add(svc.name);
      render(svc);
      const c = cards.get(svc.name);
      // Read the history now and then, and at once when a deployment starts or ends.
      const active = svc.active_deployment ? svc.active_deployment.id : null;
      if (c.polls++ % HISTORY_EVERY === 0 || active !== c.activeId) {
        c.activeId = active;
        await renderHistory(c, svc.name);
      }
    }
    for (const [name, c] of cards) {
      if (!seen.has(name)) {
        c.root.remove();
        cards.delete(name);
      }
    }
    setConnection(`updated ${new Date().toLocaleTimeString()}`, false);
  } catch (e) {
    if (e instanceof ApiFailure && e.status === 401) {
      setConnection(token ? "the token was refused" : "this API needs a token to read: enter it above", true);
    } else if (e instanceof ApiFailure) {
      setConnection(`the API answered ${e.status}: ${e.message}`, true);
    } else if (e instanceof TypeError && /fetch|network/i.test(e.message)) {
      setConnection("the daemon cannot be reached", true);
    } else {
      // A fault of the page itself: said as such, and logged for whoever debugs it.
      console.error(e);
      setConnection(`the page failed to show the answer: ${e.message}`, true);
    }
    for (const c of cards.values()) setButtons(c, null);
  } finally {
    polling = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  input.value = token;
  document.getElementById("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = input.value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    refresh();
  });
  document.getElementById("forget-token").addEventListener("click", () => {
    token = "";
    input.value = "";
    sessionStorage.removeItem(TOKEN_KEY);
    refresh();
  });
  refresh();
  setInterval(refresh, POLL_MS);
});
