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
