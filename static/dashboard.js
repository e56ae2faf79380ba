// Dumont's control dashboard: polls its workspace's state every second and redraws in place.
// On the control listener the admin token is never in the page: the operator types it once; it
// stays in sessionStorage (this tab only) and travels as a bearer header on the commands.
// At /__dumont/admin/ on the public listener (issue 17) an admin's browser session is the
// credential: the page carries that session's CSRF token (data-csrf-token) and every command
// sends it back in X-CSRF-Token; no bearer token is asked for.
// One script serves every workspace's page (issue 15): the page names its state URL and the
// admin prefix its commands go to (data-state-url, data-admin-base), so /dashboard/workspaces/bob
// reads bob's state and fails bob over, never the "default" workspace.
"use strict";

const POLL_MS = 1000;
const TOKEN_KEY = "dumont-admin-token";
const SVG = "http://www.w3.org/2000/svg";
let lastState = null;
let pendingAction = null;

const $ = (id) => document.getElementById(id);
const page = () => document.querySelector("main").dataset;
// What each button asks of the control API, under the page's admin prefix.
const COMMANDS = { failover: "failover", failback: "failback", resume: "resume", keep: "park/keep" };

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

function drawSparkline(svg, points) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const values = points.filter((p) => p !== null);
  if (!points.length) return;
  const max = Math.max(...values, 1);
  const step = 180 / Math.max(points.length - 1, 1);
  let run = [];
  const flush = () => {
    if (run.length > 1) {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", run.join(" "));
      svg.appendChild(line);
    }
    run = [];
  };
  points.forEach((p, i) => {
    const x = (i * step).toFixed(1);
    if (p === null) {
      flush();
      const gap = document.createElementNS(SVG, "rect");
      gap.setAttribute("class", "gap");
      gap.setAttribute("x", x);
      gap.setAttribute("y", "0");
      gap.setAttribute("width", Math.max(step, 2).toFixed(1));
      gap.setAttribute("height", "36");
      svg.appendChild(gap);
    } else {
      run.push(`${x},${(34 - (p / max) * 30).toFixed(1)}`);
    }
  });
  flush();
}

function renderBackends(state) {
  for (const [role, b] of Object.entries(state.backends)) {
    const box = document.querySelector(`.backend[data-role="${role}"]`);
    if (!box) continue;
    box.querySelector(".dot").dataset.healthy = String(b.healthy);
    const latency = b.last_check_latency_ms;
    text(box.querySelector('[data-field="latency"]'),
      b.healthy === false ? "down" : latency === null ? "–" : `${latency.toFixed(2)} ms`);
    const detail = b.healthy === false && b.last_detail ? `${b.url} · ${b.last_detail}` : b.url;
    text(box.querySelector('[data-field="detail"]'), detail);
    drawSparkline(box.querySelector(".sparkline"), b.latency_history_ms || []);
  }
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = c;
    tr.appendChild(td);
  }
  return tr;
}

function renderSwitches(state) {
  const body = $("switches-body");
  const rows = state.switches.map((s) => row([
    String(s.id), `${seconds(s.age_s)} ago`, s.kind, `${s.from || "nothing"} → ${s.to}`,
    s.reason + (s.detail ? ` (${s.detail})` : ""), s.outcome, seconds(s.duration_s),
  ]));
  if (!rows.length) rows.push(row(["no switch yet"]));
  body.replaceChildren(...rows);
}

function renderSync(state) {
  const sync = state.sync;
  const pill = $("sync-state");
  text(pill, sync.state.replace("_", " "));
  const tone = { syncing: "pill-good", fenced: "pill-warn", reverse_syncing: "pill-warn",
    degraded: "pill-bad", stopped: "pill-bad" }[sync.state] || "";
  pill.className = `pill ${tone}`;
  text($("sync-lag"), sync.lag_seconds === null ? "not measured" : seconds(sync.lag_seconds));
  text($("sync-age"), sync.report_age_s === null ? "never" : `${seconds(sync.report_age_s)} ago`);
}

function renderTips(state) {
  const body = $("tips-body");
  const tips = state.tips;
  if (!tips || !Object.keys(tips).length) {
    body.replaceChildren(row(["no tip counts yet"]));
    return;
  }
  body.replaceChildren(...Object.entries(tips).map(([variant, t]) => row([
    variant, String(t.impressions), String(t.clicks),
    t.click_rate === null ? "–" : `${(t.click_rate * 100).toFixed(1)} %`,
  ])));
}

function renderSavings(state) {
  const s = state.savings;
  const facts = [
    ["Interruptions survived", String(s.interruptions_survived)],
    ["Downtime avoided", `${s.downtime_avoided_minutes.toFixed(1)} min`],
    ["Value of that time", money(s.value_saved)],
    ["Standby cost so far", s.standby_cost_so_far === null ? "–" : `$${s.standby_cost_so_far.toFixed(3)}`],
    ["Standby per month", money(s.standby_cost_per_month)],
    ["Net so far", money(s.net)],
  ];
  // Issue 18: the hours the GPU spent parked, times its price, are money the user kept.
  facts.push(["GPU parked", seconds(s.gpu_parked_hours * 3600)]);
  facts.push(["GPU cost saved by parking",
    s.gpu_cost_saved_parked === null ? "set by the first park" : money(s.gpu_cost_saved_parked)]);
  if (s.standby_share_of_gpu !== null) {
    facts.push(["Standby vs GPU price", `${(s.standby_share_of_gpu * 100).toFixed(1)} %`]);
  }
  const list = $("savings-facts");
  list.replaceChildren(...facts.flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    return [dt, dd];
  }));
  text($("savings-note"), s.configured
    ? `Each interruption counts ${s.outage_minutes} min of lost work without a standby, minus the `
      + `measured switch time (${s.switch_minutes.toFixed(2)} min so far). Break-even: `
      + `${s.break_even_minutes_per_month ?? "–"} min of avoided downtime a month. `
      + `Observed for ${s.hours_observed.toFixed(2)} h.`
    : "Set prices.standby_per_hour and prices.downtime_per_minute to see money.");
}

// Issue 18: where the GPU is, what parking it saved, and a missing standby (preempted spot VM).
function renderPark(state) {
  const park = state.park;
  const pill = $("park-phase");
  text(pill, park.phase.replace("_", " "));
  const tone = { active: "pill-good", parked: "pill-good", idle: "pill-warn", parking: "pill-warn",
    resuming: "pill-warn", park_failed: "pill-bad", resume_failed: "pill-bad" }[park.phase] || "";
  pill.className = `pill ${tone}`;
  text($("park-detail"), park.detail);
  text($("park-hours"), seconds(park.parked_hours * 3600));
  text($("park-saved"), park.gpu_cost_saved === null ? "set by the first park" : money(park.gpu_cost_saved));
  text($("park-count"), `${park.parks.parked} parked, ${park.parks.failed} failed, ${park.parks.refused} refused`);
  text($("park-resume"), park.last_resume_s === null ? "–" : seconds(park.last_resume_s));
  const standby = $("park-standby");
  text(standby, park.standby === "present" ? "present" : `${park.standby.toUpperCase()}: no backup machine`);
  standby.className = park.standby === "present" ? "" : "pill pill-bad";
  $("resume").hidden = !["parked", "resume_failed"].includes(park.phase);
  $("resume").disabled = pendingAction !== null;
  // Issue 18's "Keep it": the idle warning counts down to a park; keeping the GPU stops it.
  $("keep").hidden = park.phase !== "idle";
  $("keep").disabled = pendingAction !== null;
}

function render(state) {
  lastState = state;
  const serving = $("serving");
  serving.dataset.active = state.active || "none";
  text(serving, state.active ? `${state.backends[state.active].name} (${state.active})` : "nothing");
  text($("machine-state"), state.state.replace("_", " "));
  text($("updated"), new Date().toLocaleTimeString());
  $("offline").hidden = true;
  $("failover").disabled = pendingAction !== null || state.state !== "serving_primary";
  $("failback").disabled = pendingAction !== null || !state.failback_available;
  renderBackends(state);
  renderSwitches(state);
  renderSync(state);
  renderTips(state);
  renderSavings(state);
  renderPark(state);
}

async function poll() {
  try {
    const response = await fetch(page().stateUrl, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (err) {
    $("offline").hidden = false;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

function askForToken(action) {
  pendingAction = action;
  $("token-form").hidden = false;
  $("token").focus();
}

async function command(action) {
  const csrf = page().csrfToken;
  const needed = !csrf && (lastState
    ? lastState.admin_token_required !== false
    : page().tokenRequired !== "false");
  const token = needed ? sessionStorage.getItem(TOKEN_KEY) : "";
  if (token === null) {
    askForToken(action);
    return;
  }
  const result = $("action-result");
  text(result, `${action}…`);
  let headers = token ? { Authorization: `Bearer ${token}` } : {};
  if (csrf) headers = { "X-CSRF-Token": csrf };
  try {
    const response = await fetch(`${page().adminBase}/${COMMANDS[action]}`,
      { method: "POST", headers, credentials: "same-origin" });
    if (response.status === 401 && csrf) {
      text(result, "Your session has ended: reload the page to sign in again.");
      return;
    }
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      text(result, "The token was refused; type it again.");
      askForToken(action);
      return;
    }
    const body = await response.json();
    if (!response.ok) {
      text(result, `${action} refused: ${body.detail || body.error || response.status}`);
      return;
    }
    text(result, `${action} requested`);
    setTimeout(() => text(result, ""), 6000);
    // resume and keep answer with the park's JSON, failover and failback with the status.
    const parkAnswer = action === "resume" || action === "keep";
    render(parkAnswer ? { ...lastState, park: body } : { ...lastState, ...body });
  } catch (err) {
    text(result, `${action} failed: ${err}`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("failover").addEventListener("click", () => command("failover"));
  $("failback").addEventListener("click", () => command("failback"));
  $("resume").addEventListener("click", () => command("resume"));
  $("keep").addEventListener("click", () => command("keep"));
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    $("token-form").hidden = true;
    const action = pendingAction;
    pendingAction = null;
    if (action) command(action);
  });
  poll();
});
