// The approvals page, with live.js: when a live update replaces the board, the window's title says the new count,
// and what someone was typing in a comment or a reason (and where the focus was) stays as it was.
(function () {
  "use strict";
  var TARGET = "approvals-board";

  document.addEventListener("DOMContentLoaded", function () {
    var first = document.getElementById(TARGET);
    if (!first || !window.MutationObserver) return;
    var focused = null;
    document.addEventListener("focusin", function (event) {
      focused = event.target && event.target.id ? event.target.id : null;
    });
    new MutationObserver(function (records) {
      var board = document.getElementById(TARGET);
      if (!board) return;
      records.forEach(function (record) {
        for (var i = 0; i < record.removedNodes.length; i++) {
          var old = record.removedNodes[i];
          if (old.nodeType !== 1) continue;
          var typed = old.querySelectorAll("input[id]:not([type=hidden])");
          for (var j = 0; j < typed.length; j++) {
            var now = document.getElementById(typed[j].id);
            if (now && typed[j].value && !now.value) now.value = typed[j].value;
          }
        }
      });
      if (board.getAttribute("data-title")) document.title = board.getAttribute("data-title");
      if (focused && (document.activeElement === document.body || !document.activeElement)) {
        var again = document.getElementById(focused);
        if (again) again.focus();
      }
    }).observe(first.parentNode, { childList: true });
  });
})();
