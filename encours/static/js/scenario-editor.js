// The scenario editor's live preview follows the step being edited: focusing a field of a step
// selects that step in the preview controls, and the form posts again as for any change there.
document.addEventListener("focusin", (event) => {
  const step = event.target instanceof Element ? event.target.closest("fieldset.step[data-step]") : null;
  const select = document.getElementById("p-step");
  if (!step || !select || select.value === step.dataset.step) return;
  select.value = step.dataset.step;
  select.dispatchEvent(new Event("input", { bubbles: true }));
});
