// The transition page: follows /__dumont/events and, once a machine serves again, takes the user
// back to the exact URL they were on. Loaded with `defer`; no inline script (the page's CSP).
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("dumont-data").textContent);
  var strings = data.strings;
  var root = document.getElementById("dumont");
  var PHASES = ["lost", "switching", "connecting", "ready"];
  // Long enough to read "Connected", short enough to be back well within 3 s of the target's
  // readiness.
  var DWELL_MS = 600;
  // If this page keeps coming back (a backend that says ready but fails every request), slow down
  // instead of reloading in a tight loop.
  var LOOP_KEY = "dumont:transition-returns";
  var LOOP_WINDOW_MS = 30000;
  var returning = null;
  var backoffMs = 500;

  // Mirrors proxy/pages/render.py: phase_of() and direction_of().
  function phaseOf(s) {
    if (s.ready) return "ready";
    if (s.state === "unavailable" || !s.target) return "lost";
    var healthy = s.target === "primary" ? s.primary_healthy : s.standby_healthy;
    return healthy ? "connecting" : "switching";
  }

  function headingOf(s) {
    return s.target || s.active || "standby";
  }

  function setText(id, text) {
    var node = document.getElementById(id);
    if (node && node.textContent !== text) node.textContent = text;
  }

  function render(s) {
    var phase = phaseOf(s);
    var heading = headingOf(s);
    PHASES.forEach(function (p) { root.classList.toggle("phase-" + p, p === phase); });
    root.classList.toggle("heading-primary", heading === "primary");
    root.classList.toggle("heading-standby", heading === "standby");
    document.getElementById("dumont-primary").classList.toggle("is-healthy", s.primary_healthy);
    document.getElementById("dumont-standby").classList.toggle("is-healthy", s.standby_healthy);
    setText("dumont-status", strings["status." + phase]);
    setText("dumont-detail", phase === "lost"
      ? strings["detail.lost"]
      : strings["detail." + phase + "." + heading]);
    setText("dumont-hint", strings["hint.hands_free"]);
    if (phase === "ready") scheduleReturn();
  }

  function recentReturns() {
    try {
      var now = Date.now();
      var stamps = JSON.parse(sessionStorage.getItem(LOOP_KEY) || "[]");
      return stamps.filter(function (t) { return now - t < LOOP_WINDOW_MS; });
    } catch (e) {
      return [];
    }
  }

  function scheduleReturn() {
    // In the watcher's overlay the IDE page reloads itself; this frame only shows the news.
    if (data.embedded || returning !== null) return;
    var stamps = recentReturns();
    var delay = stamps.length < 3 ? DWELL_MS : Math.min(15000, 1000 * Math.pow(2, stamps.length));
    returning = window.setTimeout(function () {
      try {
        stamps.push(Date.now());
        sessionStorage.setItem(LOOP_KEY, JSON.stringify(stamps));
      } catch (e) { /* storage may be disabled: the delay above still bounds the loop */ }
      // Served in place of the page the user asked for, this very URL (with its #fragment, which
      // the server never saw) is the way back: reload it. (replace() with the same URL and a
      // fragment would only scroll.) At /__dumont/transition, ?return= is the way back, and
      // replace() keeps the transition page out of the history.
      if (window.location.pathname.indexOf("/__dumont/") !== 0) {
        window.location.reload();
      } else {
        window.location.replace(data.returnPath);
      }
    }, delay);
  }

  function connect() {
    var source = new EventSource("/__dumont/events");
    var openedAt = Date.now();
    source.onmessage = function (event) {
      setText("dumont-hint", strings["hint.hands_free"]);
      render(JSON.parse(event.data));
    };
    source.onerror = function () {
      // Back off only while the stream keeps failing fast; a stream that lived is a fresh start
      // (a message alone is no proof: a proxy that ends every stream at once would be hammered).
      if (Date.now() - openedAt > 10000) backoffMs = 500;
      // The proxy restarted or the network blinked: reconnect ourselves, backing off up to 5 s.
      source.close();
      setText("dumont-hint", strings["hint.offline"]);
      window.setTimeout(connect, backoffMs + Math.random() * 250);
      backoffMs = Math.min(backoffMs * 2, 5000);
    };
  }

  render(data.snapshot);
  connect();
})();
