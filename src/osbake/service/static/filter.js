// Filter the manifest's package table as you type.
(function () {
  "use strict";
  const input = document.getElementById("package-filter");
  const rows = document.querySelectorAll("#package-table tbody tr");
  if (!input) return;
  input.addEventListener("input", function () {
    const q = input.value.toLowerCase();
    rows.forEach(function (row) { row.hidden = q && row.textContent.toLowerCase().indexOf(q) < 0; });
  });
})();
