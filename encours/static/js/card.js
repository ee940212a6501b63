// The card page: Stripe.js Card Element + confirmCardPayment (3-D Secure is handled by Stripe.js),
// then the checkout's status page, which says "processing" until Stripe's webhook confirms.
(function () {
  "use strict";
  var form = document.getElementById("card-form");
  if (!form) { return; }
  var errors = document.getElementById("card-errors");
  var status = document.getElementById("card-status");
  var button = document.getElementById("card-submit");
  var idleLabel = button.textContent;
  var next = document.getElementById("card-next");
  var failures = {};
  try { failures = JSON.parse(form.dataset.failures || "{}"); } catch (ignored) { failures = {}; }

  // Our sentence for Stripe's decline or error code, in the page's language: never Stripe's own text.
  function failureMessage(error) {
    return (error && (failures[error.decline_code] || failures[error.code])) || failures.generic || form.dataset.messageFailed;
  }

  function showError(message) {
    errors.textContent = message;
    button.disabled = false;
    button.textContent = idleLabel;
    form.removeAttribute("aria-busy");
  }

  if (typeof window.Stripe !== "function") {
    showError(form.dataset.messageUnavailable);
    button.disabled = true;
    return;
  }
  var stripe = window.Stripe(form.dataset.publishableKey, { locale: form.dataset.locale || "auto" });
  var card = stripe.elements().create("card", { hidePostalCode: true });
  card.mount("#card-element");
  card.on("change", function (event) {
    errors.textContent = event && event.error ? event.error.message : "";
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (button.disabled) { return; }  // a double click confirms once
    errors.textContent = "";
    button.disabled = true;
    button.textContent = button.dataset.busyLabel || idleLabel;
    form.setAttribute("aria-busy", "true");
    status.textContent = button.dataset.busyLabel || "";
    stripe.confirmCardPayment(form.dataset.clientSecret, { payment_method: { card: card } })
      .then(function (result) {
        if (result.error) {
          showError(failureMessage(result.error));
          // A declined attempt may leave the intent unusable: "Try again" reloads the page, which
          // makes a fresh one when needed.
          if (next) { next.hidden = false; }
          return;
        }
        window.location.assign(form.dataset.returnPath);
      })
      .catch(function () { showError(form.dataset.messageUnavailable); });
  });
})();
