// Quick exit ("Exit this page", as GOV.UK): the button, or Shift pressed three times within
// a second, blanks this page and replaces it (and its history entry) with /exit, which locks
// the session and redirects to a neutral site. No inline script: the CSP forbids it.
(function () {
  "use strict";
  function leave(event) {
    if (event) { event.preventDefault(); }
    var target = document.body.getAttribute("data-exit-url") || "/exit";
    document.title = "";
    document.body.innerHTML = "";
    window.location.replace(target);
  }
  var button = document.getElementById("quick-exit");
  if (button) { button.addEventListener("click", leave); }
  var presses = [];
  document.addEventListener("keyup", function (event) {
    if (event.key !== "Shift") { presses = []; return; }
    var now = Date.now();
    presses = presses.filter(function (t) { return now - t < 1000; });
    presses.push(now);
    if (presses.length >= 3) { leave(null); }
  });
})();
