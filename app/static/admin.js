/* injixo admin page: copy the new key, confirm revocations. No dependencies. */
(function () {
  "use strict";

  function announce(text, button) {
    // Each copy button may name its own live region (data-status); else the new key's.
    var id = (button && button.getAttribute("data-status")) || "copy-status";
    var status = document.getElementById(id);
    if (status) { status.textContent = text; }
  }

  function selectFallback(input, button) {
    input.focus();
    input.select();
    input.setSelectionRange(0, input.value.length);
    var copied = false;
    try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
    announce(copied ? "Copied to the clipboard." : "Selected: press Ctrl+C (or \u2318C) to copy.", button);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) { return; }
    var input = document.getElementById(button.getAttribute("data-copy"));
    if (!input) { return; }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(
        function () { announce("Copied to the clipboard.", button); button.textContent = "Copied"; },
        function () { selectFallback(input, button); }
      );
    } else {
      selectFallback(input, button);
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
})();

/* Import history: the row of an unfinished import follows its JSON until the import ends. */
(function () {
  "use strict";

  var EVERY_MS = 1000;

  function show(row, b) {
    var bar = row.querySelector("[data-field=bar]");
    var label = row.querySelector("[data-field=label]");
    bar.max = Math.max(b.windows_total, 1);
    bar.value = b.windows_done;
    bar.textContent = b.windows_done + " of " + b.windows_total;
    label.textContent = b.label;
    label.className = "badge " + b.level;
    row.querySelector("[data-field=text]").textContent = b.text;
    row.setAttribute("data-state", b.state);
    if (b.finished) {
      var cancel = row.querySelector("[data-field=cancel]");
      if (cancel) { cancel.remove(); }
      row.removeAttribute("data-poll");
      var status = document.getElementById("history-status");
      if (status) { status.textContent = b.label + ": " + b.text; }
    }
  }

  function follow(row) {
    var url = row.getAttribute("data-poll");
    function tick() {
      fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (response.status === 401 || response.status === 404) {
            // Signed out, or the import is gone: say so and stop asking.
            return response.json().then(function (body) {
              row.querySelector("[data-field=text]").textContent = body.error;
              return null;
            });
          }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (b) {
          if (!b) { return; }
          show(row, b);
          if (!b.finished) { window.setTimeout(tick, EVERY_MS); }
        })
        .catch(function () { window.setTimeout(tick, 5 * EVERY_MS); }); // a blip: again, slower
    }
    window.setTimeout(tick, EVERY_MS);
  }

  document.querySelectorAll("tr[data-poll]").forEach(follow);
})();
