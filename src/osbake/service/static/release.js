// The build's release jobs, live: their states and the log of the newest one that is
// not finished, read again every two seconds while any job is queued or running.
(function () {
  "use strict";
  var section = document.getElementById("release");
  var build = document.getElementById("build");
  if (!section || !build) { return; }
  var id = build.dataset.id;
  var body = section.querySelector("#release-jobs tbody");
  var log = document.getElementById("release-log");

  function cell(text) {
    var td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function row(j) {
    var tr = document.createElement("tr");
    tr.className = "job job-" + j.state;
    tr.appendChild(cell(j.kind + " #" + j.id));
    tr.appendChild(cell(j.target || "the console's streams"));
    var state = cell(j.state + (j.error ? " " + j.error : ""));
    state.className = "job-state";
    tr.appendChild(state);
    tr.appendChild(cell(j.attempts + " / " + j.max_attempts));
    var link = document.createElement("a");
    link.href = j.log;
    link.textContent = "log";
    var td = document.createElement("td");
    td.appendChild(link);
    tr.appendChild(td);
    return tr;
  }

  function refresh() {
    fetch("/api/builds/" + id).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (b) {
        if (!b) { return; }
        var jobs = b.release.jobs;
        body.replaceChildren.apply(body, jobs.map(row));
        var live = jobs.filter(function (j) { return j.state === "queued" || j.state === "running"; });
        var shown = live.length ? live[live.length - 1] : jobs[jobs.length - 1];
        if (shown) {
          fetch(shown.log).then(function (r) { return r.ok ? r.text() : ""; })
            .then(function (text) { log.textContent = text; });
        }
        if (live.length) { setTimeout(refresh, 2000); }
      });
  }
  refresh();
}());
