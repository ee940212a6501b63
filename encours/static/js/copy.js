// Copy buttons of the bank-transfer page: shown only where the clipboard can be written; a pressed
// button reads "Copied" (and screen readers hear it) until another one is pressed.
(function () {
  "use strict";
  if (!navigator.clipboard) { return; }
  var status = document.getElementById("copy-status");
  var buttons = document.querySelectorAll("button.copy-button[data-copy]");
  buttons.forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    var label = button.textContent;
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = source.getAttribute("data-value") || source.textContent.replace(/\s+/g, "");
      navigator.clipboard.writeText(text).then(function () {
        var done = (status && status.getAttribute("data-done")) || "Copied";
        buttons.forEach(function (other) {
          if (other.classList.contains("is-copied")) { other.textContent = other.getAttribute("data-label"); }
          other.classList.remove("is-copied");
        });
        button.setAttribute("data-label", label);
        button.textContent = done;
        button.classList.add("is-copied");
        if (status) { status.textContent = ""; status.textContent = done; }
      });
    });
  });
})();
