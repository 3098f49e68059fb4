// The build list refreshes itself while builds are queued or running.
(function () {
  "use strict";
  if (document.querySelector(".state-queued, .state-running")) {
    setTimeout(function () { window.location.reload(); }, 4000);
  }
})();
