// Dumont's overview of every workspace (issue 15): polls /dashboard/overview for one page of rows
// and the totals, and redraws in place. A row is keyed by its workspace and a cell is rebuilt only
// when what it shows changed, so a thousand rows cost a thousand string comparisons a poll, not a
// thousand rebuilt rows. The page carries no token: it only reads; each workspace's own page
// (the row's link) has the buttons.
"use strict";

const POLL_MS = 1000;
// The proxy builds this JSON on the event loop that forwards its traffic: with hundreds of
// workspaces, poll less often (a thousand rows take the proxy about 10 ms to build).
const POLL_MANY_MS = 3000;
const MANY = 200;
const FIELDS = ["name", "hosts", "state", "serving", "health", "last-switch", "sync", "savings",
  "park"];

const $ = (id) => document.getElementById(id);
const view = { offset: 0, limit: 100, q: "", attention: false };
const rows = new Map(); // workspace name -> its <tr>, for the rows on this page
let timer = null;
let busy = false;
let again = false; // the view changed while a poll was out: poll again at once
let generation = 0; // bumped by every change of the view; an answer to an older one is dropped

function text(el, value) {
  if (el && el.textContent !== value) el.textContent = value;
}

function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function money(v) {
  return v === null || v === undefined ? "–" : `$${v.toFixed(v < 10 ? 2 : 0)}`;
}

function words(value) {
  return value.replaceAll("_", " ");
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  node.append(...children);
  return node;
}

// A pill's colour comes from its value, in the stylesheet (.pill[data-value=...]).
function pill(value) {
  const node = el("span", { className: "pill pill-small" }, words(value));
  node.dataset.value = value;
  return node;
}

// Each cell: what it shows as one string (compared each poll), and how to draw it.
const CELLS = {
  name: (w) => [JSON.stringify([w.name, w.attention]), () => {
    const nodes = [el("a", { href: w.url }, w.name)];
    if (w.attention.length) {
      nodes.push(el("div", { className: "attention" },
        ...w.attention.map((why) => el("span", { className: "pill pill-small pill-bad" }, why))));
    }
    return nodes;
  }],
  hosts: (w) => [w.hosts.join(", "), () => [w.hosts.join(", ")]],
  state: (w) => [w.state, () => [pill(w.state)]],
  serving: (w) => {
    const shown = w.active ? `${w.backends[w.active].name} (${w.active})` : "nothing";
    return [shown, () => [shown]];
  },
  health: (w) => [JSON.stringify(w.healthy), () => Object.entries(w.healthy).map(([role, up]) => {
    const dot = el("span", { className: "dot", title: `${role}: ${w.backends[role].url}` });
    dot.dataset.healthy = String(up);
    dot.dataset.role = role;
    const state = up === null ? "unknown" : up ? "up" : "down";
    return el("span", { className: "health-item" }, dot, `${role} ${state}`);
  })],
  "last-switch": (w) => {
    const s = w.last_switch;
    if (!s) return ["–", () => ["–"]];
    const shown = `${s.kind} → ${s.to} · ${s.outcome} · ${seconds(s.age_s)} ago`;
    return [shown, () => [el("span", { title: s.reason }, shown)]];
  },
  sync: (w) => {
    const lag = w.sync.lag_seconds === null ? "" : ` ${seconds(w.sync.lag_seconds)}`;
    return [w.sync.state + lag, () => [pill(w.sync.state), lag]];
  },
  savings: (w) => {
    const s = w.savings;
    let shown = `${s.interruptions_survived} survived`;
    if (s.value_saved !== null) shown += ` · ${money(s.value_saved)} saved`;
    if (s.gpu_cost_saved_parked) shown += ` · ${money(s.gpu_cost_saved_parked)} parked`;
    const detail = `downtime avoided ${s.downtime_avoided_minutes.toFixed(1)} min · net ${money(s.net)}`
      + ` · standby so far ${money(s.standby_cost_so_far)}`;
    return [shown + detail, () => [el("span", { title: detail }, shown)]];
  },
  park: (w) => {
    const missing = w.park.standby === "present" ? "" : `standby VM ${w.park.standby}`;
    return [w.park.phase + missing, () => [pill(w.park.phase),
      missing ? el("span", { className: "pill pill-small pill-bad" }, missing) : ""]];
  },
};

function rowFor(w) {
  let tr = rows.get(w.name);
  if (!tr) {
    tr = el("tr");
    tr.dataset.workspace = w.name;
    for (const field of FIELDS) {
      const td = el("td");
      td.dataset.field = field;
      tr.appendChild(td);
    }
    rows.set(w.name, tr);
  }
  for (const td of tr.children) {
    const [signature, draw] = CELLS[td.dataset.field](w);
    if (td.dataset.shown !== signature) {
      td.replaceChildren(...draw());
      td.dataset.shown = signature;
    }
  }
  return tr;
}

function renderRows(data) {
  const body = $("workspaces-body");
  const wanted = data.workspaces.map(rowFor);
  const names = new Set(data.workspaces.map((w) => w.name));
  for (const name of rows.keys()) if (!names.has(name)) rows.delete(name);
  if (!wanted.length) {
    const why = data.totals.workspaces ? "no workspace matches" : "no workspace yet";
    wanted.push(el("tr", {}, el("td", { colSpan: FIELDS.length, className: "muted" }, why)));
  }
  const same = wanted.length === body.children.length
    && wanted.every((tr, i) => body.children[i] === tr);
  if (!same) body.replaceChildren(...wanted);
}

function renderTotals(data) {
  const t = data.totals;
  text($("count"), String(t.workspaces));
  const values = { ...t.states, attention: t.attention,
    interruptions_survived: t.interruptions_survived };
  for (const dd of document.querySelectorAll("[data-total]")) {
    text(dd, String(values[dd.dataset.total] || 0));
  }
  const first = data.matching ? data.offset + 1 : 0;
  const last = data.offset + data.workspaces.length;
  text($("page-info"), `${first}–${last} of ${data.matching}`);
  $("prev").disabled = data.offset === 0;
  $("next").disabled = last >= data.matching;
}

// The replicas card (issue 16), when the proxy is one of several: redrawn only when it changed.
let lastCluster = "";
function viewText(r) {
  if (!r.published) return "no view yet";
  if (!r.down_count) return "all up";
  const more = r.down_count - r.down.length;
  return r.down.join(", ") + (more > 0 ? ` and ${more} more` : "");
}

function renderCluster(cluster) {
  const body = $("replicas-body");
  if (!cluster || !body) return;
  const seen = JSON.stringify(cluster);
  if (seen === lastCluster) return;
  lastCluster = seen;
  text($("cluster-summary"), cluster.summary);
  body.replaceChildren(...cluster.replicas.map((r) => {
    const name = el("td", {}, r.replica);
    if (r.this) name.append(" ", el("span", { className: "pill pill-small" }, "this one"));
    const row = el("tr", {}, name, el("td", {}, pill(r.role)), el("td", {}, r.control || "–"),
      el("td", {}, viewText(r)));
    row.dataset.replica = r.replica;
    return row;
  }));
}

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(poll, ms);
}

async function poll() {
  if (busy) {
    again = true;
    return;
  }
  busy = true;
  again = false;
  const asked = generation;
  let next = POLL_MS;
  try {
    const query = new URLSearchParams({ offset: view.offset, limit: view.limit });
    if (view.q) query.set("q", view.q);
    if (view.attention) query.set("attention", "1");
    const url = `${document.querySelector("main").dataset.overviewUrl}?${query}`;
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    if (asked !== generation) {
      again = true;
      return;
    }
    if (data.offset > 0 && data.offset >= data.matching) {
      // Workspaces went away (or the filter narrowed) under this page: show the last one.
      view.offset = Math.max(0, data.matching - view.limit);
      again = true;
      return;
    }
    renderTotals(data);
    renderRows(data);
    renderCluster(data.cluster);
    text($("updated"), new Date().toLocaleTimeString());
    $("offline").hidden = true;
    if (data.totals.workspaces > MANY) next = POLL_MANY_MS;
  } catch (err) {
    $("offline").hidden = false;
  } finally {
    busy = false;
    schedule(again ? 0 : next);
  }
}

function changed() {
  generation += 1;
  schedule(0);
}

document.addEventListener("DOMContentLoaded", () => {
  const size = Number(document.querySelector("main").dataset.pageSize);
  if (size > 0) view.limit = size;
  $("controls").addEventListener("submit", (event) => event.preventDefault());
  let typing = null;
  $("filter").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      view.q = $("filter").value.trim();
      view.offset = 0;
      changed();
    }, 200);
  });
  $("attention-only").addEventListener("change", () => {
    view.attention = $("attention-only").checked;
    view.offset = 0;
    changed();
  });
  $("prev").addEventListener("click", () => {
    view.offset = Math.max(0, view.offset - view.limit);
    changed();
  });
  $("next").addEventListener("click", () => {
    view.offset += view.limit;
    changed();
  });
  $("page-size").addEventListener("change", () => {
    view.limit = Number($("page-size").value);
    view.offset = 0;
    changed();
  });
  poll();
});
