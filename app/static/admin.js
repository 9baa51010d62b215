/* injixo admin page: copy the new key, confirm revocations. No dependencies. */
(function () {
  "use strict";

  function announce(text) {
    var status = document.getElementById("copy-status");
    if (status) { status.textContent = text; }
  }

  function selectFallback(input) {
    input.focus();
    input.select();
    input.setSelectionRange(0, input.value.length);
    var copied = false;
    try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
    announce(copied ? "Copied to the clipboard." : "Selected: press Ctrl+C (or \u2318C) to copy.");
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) { return; }
    var input = document.getElementById(button.getAttribute("data-copy"));
    if (!input) { return; }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(
        function () { announce("Copied to the clipboard."); button.textContent = "Copied"; },
        function () { selectFallback(input); }
      );
    } else {
      selectFallback(input);
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
})();
