// Live updates for the dashboard (docs/dashboard.md). The page names its
// event stream in <body data-events>; on each "change" event the page is
// fetched again and every element marked data-live is replaced by the
// element with the same id from the fresh copy. Elements holding the
// keyboard focus are left alone (the next change updates them). Without
// JavaScript, or without EventSource, the pages simply do not update.
(function () {
  "use strict";
  var body = document.body;
  var url = body.getAttribute("data-events");
  if (!url || !window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  var busy = false, again = false, timer = null, opened = false;

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var olds = document.querySelectorAll("[data-live][id]");
    for (var i = 0; i < olds.length; i++) {
      var old = olds[i];
      var fresh = doc.getElementById(old.id);
      if (!fresh || old.contains(document.activeElement)) {
        continue;
      }
      old.replaceWith(document.importNode(fresh, true));
    }
    body.setAttribute("data-refreshed", String(Date.now()));
  }

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(window.location.href, {credentials: "same-origin", cache: "no-store", headers: {"Accept": "text/html"}})
      .then(function (r) {
        if (!r.ok || r.redirected) {
          throw new Error("HTTP " + r.status);
        }
        return r.text();
      })
      .then(swap)
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          schedule();
        }
      });
  }

  // schedule coalesces bursts of events into one fetch.
  function schedule() {
    if (timer === null) {
      timer = window.setTimeout(function () {
        timer = null;
        refresh();
      }, 200);
    }
  }

  var es = new EventSource(url);
  es.addEventListener("ready", function () {
    body.setAttribute("data-live", "on");
    if (opened) {
      schedule(); // reconnected: changes may have been missed
    }
    opened = true;
  });
  es.addEventListener("change", schedule);
  es.addEventListener("error", function () {
    body.setAttribute("data-live", es.readyState === EventSource.CLOSED ? "off" : "reconnecting");
  });
})();
