// The in-IDE watcher. The proxy adds this script to code-server's HTML documents. It follows
// /__dumont/events and, when the proxy switches machines, covers the IDE with the transition page
// and reloads the document as soon as the new machine serves: before VS Code gives up on its
// WebSockets and asks the user to reload, and without a click.
//
// Never a reload loop: it reloads at most once per (epoch, machine), remembered in sessionStorage.
// Survives the proxy restarting: the event stream reconnects with backoff, and an epoch that went
// backwards (a new proxy process counts from zero) is not mistaken for a switch.
(function () {
  "use strict";

  // Only the IDE's top-level document: not VS Code's webview frames, not our own overlay frame.
  if (window.top !== window.self || window.__dumontWatcher) return;
  window.__dumontWatcher = true;

  var RELOADED_KEY = "dumont:reloaded-for";
  // Set just before a switch's reload, read by the next document's watcher: the transition screen
  // stays up across the reload until the new machine's workbench is on screen.
  var ARRIVING_KEY = "dumont:arriving";
  var ARRIVAL_MAX_MS = 30000;
  var arriving = false;
  var DISMISSED_KEY = "dumont:failback-dismissed";
  var script = document.currentScript;
  // The proxy may stamp the epoch that served this document; a switch between serving it and our
  // subscribing is then still seen as a switch.
  var servedEpoch = script && script.dataset.dumontEpoch ? Number(script.dataset.dumontEpoch) : null;
  var baseline = null;
  var overlay = null;
  var notice = null;
  var parkNotice = null; // the parked GPU's notice (issue 18): idle countdown, parked, resuming
  var strings = null;
  var lastState = null; // the last event: its notices are due once an arrival's cover lifts
  var backoffMs = 500;

  function storageGet(key) {
    try { return window.sessionStorage.getItem(key); } catch (e) { return null; }
  }

  function storageSet(key, value) {
    try { window.sessionStorage.setItem(key, value); } catch (e) { /* private mode: fine */ }
  }

  function loadStyles() {
    var link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = "/__dumont/static/watcher.css";
    (document.head || document.documentElement).appendChild(link);
  }

  function loadStrings() {
    if (strings) return Promise.resolve(strings);
    return fetch("/__dumont/strings", { credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (body) { strings = body.strings; return strings; });
  }

  // Did the machine behind this document change since it was served?
  function moved(s) {
    if (baseline === null) {
      baseline = { epoch: s.epoch, active: s.active };
      if (servedEpoch !== null && servedEpoch < s.epoch) baseline = { epoch: servedEpoch, active: null };
    }
    var differentMachine = baseline.active !== null && s.active !== null && s.active !== baseline.active;
    if (s.epoch < baseline.epoch) {
      // A new proxy process: its epochs start again. Only the machine tells us anything.
      if (!differentMachine && s.ready) baseline = { epoch: s.epoch, active: s.active };
      return differentMachine;
    }
    if (baseline.active === null && s.ready && s.epoch === baseline.epoch) baseline.active = s.active;
    return s.epoch > baseline.epoch || differentMachine;
  }

  function showOverlay() {
    if (overlay) return;
    overlay = document.createElement("div");
    overlay.className = "dumont-watcher-overlay";
    var frame = document.createElement("iframe");
    frame.className = "dumont-watcher-frame";
    frame.title = "Dumont";
    frame.src = "/__dumont/transition?embedded=1&return=" +
      encodeURIComponent(window.location.pathname + window.location.search);
    overlay.appendChild(frame);
    document.documentElement.appendChild(overlay);
    // Next frame: let the browser lay out the hidden state first, so the fade-in runs.
    window.requestAnimationFrame(function () { overlay.classList.add("is-visible"); });
  }

  function hideOverlay() {
    if (!overlay) return;
    overlay.remove();
    overlay = null;
  }

  function reloadFor(s) {
    var key = s.epoch + ":" + s.active;
    if (storageGet(RELOADED_KEY) === key) {
      // We already reloaded for this switch and still see it as new: stop here, rebaseline.
      baseline = { epoch: s.epoch, active: s.active };
      hideOverlay();
      return;
    }
    storageSet(RELOADED_KEY, key);
    storageSet(ARRIVING_KEY, String(Date.now()));
    window.location.reload();
  }

  // After a switch's reload: cover the page until VS Code's workbench has rendered (or give up
  // after ARRIVAL_MAX_MS), so the user watches one continuous transition, not a blank page.
  function coverArrival() {
    var since = Number(storageGet(ARRIVING_KEY) || 0);
    if (!since || Date.now() - since > ARRIVAL_MAX_MS) return;
    arriving = true;
    showOverlay();
    var started = Date.now();
    // code-server's workbench document carries this meta tag; its UI is built by scripts later.
    var isWorkbench = !!document.getElementById("vscode-workbench-web-configuration");
    (function check() {
      var done = isWorkbench
        ? document.querySelector(".monaco-workbench .part.editor, .monaco-workbench .part.sidebar")
        : document.readyState !== "loading";
      if (done || Date.now() - started > ARRIVAL_MAX_MS) {
        try { window.sessionStorage.removeItem(ARRIVING_KEY); } catch (e) { /* fine */ }
        arriving = false;
        // A beat for the transition page's "connected" state, then fade out. The notices the
        // last event carried were held back while the page was covered, and the event stream
        // sends nothing new until something changes: show them now (the parked GPU's notice
        // after a park's reload, issue 18).
        window.setTimeout(function () {
          hideOverlay();
          if (lastState) showNotices(lastState);
        }, done ? 600 : 0);
        return;
      }
      window.setTimeout(check, 150);
    })();
  }

  function showNotice(s) {
    loadStrings().then(function (t) {
      if (notice) return;
      notice = document.createElement("div");
      notice.className = "dumont-watcher-notice";
      notice.setAttribute("role", "alertdialog");
      var text = document.createElement("p");
      text.textContent = t["notice.failback"];
      var actions = document.createElement("div");
      actions.className = "dumont-watcher-actions";
      var later = document.createElement("button");
      later.type = "button";
      later.className = "dumont-watcher-later";
      later.textContent = t["notice.dismiss"];
      later.addEventListener("click", function () {
        storageSet(DISMISSED_KEY, String(s.epoch));
        hideNotice();
      });
      var go = document.createElement("button");
      go.type = "button";
      go.className = "dumont-watcher-go";
      go.textContent = t["notice.switch"];
      go.addEventListener("click", function () {
        go.disabled = true;
        fetch("/__dumont/failback", { method: "POST", credentials: "same-origin" })
          .then(function (response) {
            if (!response.ok) throw new Error(String(response.status));
            hideNotice(); // the switch itself arrives on the event stream
          })
          .catch(function () {
            text.textContent = t["notice.failed"];
            go.disabled = false;
          });
      });
      actions.appendChild(later);
      actions.appendChild(go);
      notice.appendChild(text);
      notice.appendChild(actions);
      document.documentElement.appendChild(notice);
    }).catch(function () { /* no strings, no notice; the next event tries again */ });
  }

  function hideNotice() {
    if (!notice) return;
    notice.remove();
    notice = null;
  }

  // A resume's step comes as a key, so the user reads it in their language; provisioning's own
  // detail (English, one line) is the fallback for anything else.
  function fill(text, park, t) {
    var step = park.step ? t["park.step." + park.step] : null;
    return text
      .replace("{idle}", String(park.idle_min === null ? "?" : park.idle_min))
      .replace("{left}", String(park.park_in_min === null ? "?" : park.park_in_min))
      .replace("{seconds}", String(park.resume_s === null ? "?" : park.resume_s))
      .replace("{detail}", step || park.detail || "…");
  }

  // The park notice: its text follows the phase; idle offers "Keep it", parked (or a failed
  // resume) offers "Bring the GPU back". Each button posts to the proxy, same-origin.
  function showPark(park) {
    loadStrings().then(function (t) {
      if (!parkNotice) {
        parkNotice = document.createElement("div");
        parkNotice.className = "dumont-watcher-notice dumont-park";
        parkNotice.setAttribute("role", "status");
        document.documentElement.appendChild(parkNotice);
      }
      var key = [park.phase, park.detail, park.idle_min, park.park_in_min, park.step,
        park.resume_s].join("|");
      if (parkNotice.dataset.shown === key) return;
      parkNotice.dataset.shown = key;
      parkNotice.dataset.phase = park.phase;
      parkNotice.textContent = "";
      var text = document.createElement("p");
      text.textContent = fill(t["park." + park.phase] || park.phase, park, t);
      parkNotice.appendChild(text);
      var action = park.phase === "idle" ? ["park.keep", "/__dumont/park/keep"]
        : (park.phase === "parked" || park.phase === "resume_failed")
          ? ["park.resume", "/__dumont/resume"] : null;
      if (!action) return;
      var actions = document.createElement("div");
      actions.className = "dumont-watcher-actions";
      var go = document.createElement("button");
      go.type = "button";
      go.className = "dumont-watcher-go";
      go.textContent = t[action[0]];
      go.addEventListener("click", function () {
        go.disabled = true;
        fetch(action[1], { method: "POST", credentials: "same-origin" })
          .then(function (response) {
            if (!response.ok) throw new Error(String(response.status));
            // The new phase arrives on the event stream.
          })
          .catch(function () {
            text.textContent = t["park.refused"];
            go.disabled = false;
          });
      });
      actions.appendChild(go);
      parkNotice.appendChild(actions);
    }).catch(function () { /* no strings, no notice; the next event tries again */ });
  }

  function hidePark() {
    if (!parkNotice) return;
    parkNotice.remove();
    parkNotice = null;
  }

  function handle(s) {
    var hasMoved = moved(s);
    if (hasMoved || !s.ready) showOverlay();
    if (hasMoved && s.ready) {
      reloadFor(s);
    } else if (s.ready && !arriving) {
      hideOverlay(); // a blip without a switch: VS Code reconnects by itself
    }
    lastState = s;
    showNotices(s);
  }

  // The notices sit above the IDE, never above the transition screen.
  function showNotices(s) {
    var offerFailback = s.failback_available && s.state === "serving_standby" && !overlay &&
      storageGet(DISMISSED_KEY) !== String(s.epoch);
    if (offerFailback) showNotice(s); else hideNotice();
    if (s.park && !overlay) showPark(s.park); else hidePark();
  }

  function connect() {
    var source = new EventSource("/__dumont/events");
    var openedAt = Date.now();
    source.onmessage = function (event) {
      handle(JSON.parse(event.data));
    };
    source.onerror = function () {
      // Back off only while the stream keeps failing fast; a stream that lived is a fresh start
      // (a message alone is no proof: a proxy that ends every stream at once would be hammered).
      if (Date.now() - openedAt > 10000) backoffMs = 500;
      source.close();
      window.setTimeout(connect, backoffMs + Math.random() * 250);
      backoffMs = Math.min(backoffMs * 2, 5000);
    };
  }

  loadStyles();
  coverArrival();
  connect();
})();
