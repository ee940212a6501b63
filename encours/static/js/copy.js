// Copy buttons of the bank-transfer page: shown only where the clipboard can be written.
(function () {
  "use strict";
  if (!navigator.clipboard) { return; }
  var status = document.getElementById("copy-status");
  document.querySelectorAll("button.copy-button[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = source.getAttribute("data-value") || source.textContent.replace(/\s+/g, "");
      navigator.clipboard.writeText(text).then(function () {
        if (status) { status.textContent = status.getAttribute("data-done") || "Copied"; }
      });
    });
  });
})();
