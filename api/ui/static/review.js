// Keyboard shortcuts of the pair view: a / b / t / x label, n opens the next pair.
// Plain JS, no build step. Keys typed into the note (or any field) are left alone.
(function () {
  "use strict";
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT")) return;
    var key = event.key.toLowerCase();
    if (key === "n") {
      var next = document.getElementById("next-pair");
      if (next) { event.preventDefault(); window.location.href = next.getAttribute("href"); }
      return;
    }
    var button = document.querySelector('#label-form button[data-key="' + key + '"]');
    if (button) { event.preventDefault(); button.click(); }
  });
  // After a label, mark the picked button.
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = document.getElementById("label-form");
    if (!form || event.detail.elt !== form || !event.detail.successful) return;
    var label = document.getElementById("my-label");
    form.querySelectorAll("button").forEach(function (b) {
      b.classList.toggle("picked", !!label && b.value === label.textContent);
    });
  });
})();
