// Shepherd's dashboard: pages render on the server and work without this file; with it they stay live.
// An element with data-live="<url>" opens a Server-Sent Events stream from that url. Its events carry HTML the
// server rendered (escaped by its templates) for a part of the page:
//   append  {target, html}  add html at the end of #target (a log); a log scrolled to its end stays at its end
//   replace {target, html}  put html in place of #target (a status, a list of approvals)
//   end     {}              the stream is over (the task's turn ended): stop listening
// The browser reconnects a dropped stream by itself and sends the last event id, so nothing is shown twice.
(function () {
  "use strict";

  function atEnd(el) {
    return el.scrollHeight - el.scrollTop - el.clientHeight < 24;
  }

  function apply(kind, data) {
    var target = document.getElementById(data.target);
    if (!target) return;
    if (kind === "append") {
      var follow = atEnd(target);
      target.insertAdjacentHTML("beforeend", data.html);
      if (follow) target.scrollTop = target.scrollHeight;
    } else if (kind === "replace") {
      target.outerHTML = data.html;
    }
  }

  function listen(el) {
    var url = el.getAttribute("data-live");
    if (!url || !window.EventSource) return;
    var source = new EventSource(url);
    el.setAttribute("data-live-state", "open");
    ["append", "replace"].forEach(function (kind) {
      source.addEventListener(kind, function (event) {
        apply(kind, JSON.parse(event.data));
      });
    });
    source.addEventListener("end", function () {
      source.close();
      el.setAttribute("data-live-state", "ended");
    });
    source.onerror = function () {
      el.setAttribute("data-live-state", source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelectorAll("[data-live]");
    for (var i = 0; i < live.length; i++) listen(live[i]);
  });
})();
