// Live build page: follows /api/builds/ID/events (server-sent events) and updates
// the log, the step list, the state and the progress line as the build runs.
(function () {
  "use strict";
  const root = document.getElementById("build");
  if (!root) return;
  const id = root.dataset.id;
  const log = document.getElementById("log");
  const steps = document.getElementById("steps");
  let follow = true;
  log.addEventListener("scroll", function () {
    follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
  });

  function stamp(t) {
    const d = new Date(t * 1000);
    return d.toTimeString().slice(0, 8);
  }

  function line(text, cls) {
    const span = document.createElement("span");
    if (cls) span.className = cls;
    span.textContent = text + "\n";
    log.appendChild(span);
  }

  function stepItem(name) {
    let item = steps.querySelector('li[data-name="' + CSS.escape(name) + '"]');
    if (!item) {
      item = document.createElement("li");
      item.dataset.name = name;
      item.innerHTML = '<span class="name"></span> <span class="secs"></span>';
      item.querySelector(".name").textContent = name;
      steps.appendChild(item);
    }
    return item;
  }

  function setStep(name, state, seconds) {
    const item = stepItem(name);
    item.className = "step step-" + state;
    if (seconds !== undefined && seconds !== null) {
      item.querySelector(".secs").textContent = Number(seconds).toFixed(1) + "s";
    }
  }

  function onEvent(e) {
    const t = stamp(e.time || 0);
    switch (e.event) {
      case "begin":
        (e.steps || []).forEach(function (s) { stepItem(s.name); });
        line(t + " building " + e.image, "step");
        break;
      case "step":
        setStep(e.name, "running");
        line(t + " ==> " + e.name, "step");
        break;
      case "command":
        line(t + " $ " + e.line, "cmd");
        break;
      case "log":
        line(t + " " + e.line);
        break;
      case "result":
        setStep(e.name, e.status || "done", e.seconds);
        line(t + " <== " + e.name + ": " + (e.status || "done") + " in " + Number(e.seconds).toFixed(1) + "s", "result");
        break;
      case "finish":
        if (e.ok) line(t + " build succeeded", "result");
        else { line(t + " build failed in step '" + e.step + "': " + e.error, "fail"); if (e.step) setStep(e.step, "failed"); }
        break;
    }
    if (follow) log.scrollTop = log.scrollHeight;
  }

  function duration(s) {
    if (s === null || s === undefined) return "";
    s = Math.floor(s);
    return s < 60 ? s + "s" : Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  }

  function onState(b) {
    const state = document.getElementById("state");
    state.innerHTML = '<span class="state state-' + b.state + '"></span>';
    state.firstChild.textContent = b.state;
    let text = "";
    if (b.state === "queued") text = "position " + b.queue_position + " in the queue";
    else if (b.state === "running") text = (b.current_step || "starting") + " · " + duration(b.elapsed_seconds);
    else if (b.state === "failed") text = "failed in " + (b.failed_step || "?") + " · " + duration(b.elapsed_seconds);
    else text = duration(b.elapsed_seconds);
    document.getElementById("progress").textContent = text;
    if (root.dataset.state !== b.state && ["succeeded", "failed", "cancelled"].indexOf(b.state) >= 0
        && ["queued", "running"].indexOf(root.dataset.state) >= 0) {
      // Finished while we watched: reload once to show artifacts, failure and actions.
      root.dataset.state = b.state;
      setTimeout(function () { window.location.reload(); }, 800);
    }
    root.dataset.state = b.state;
  }

  const source = new EventSource("/api/builds/" + id + "/events");
  source.addEventListener("build", function (m) { onEvent(JSON.parse(m.data)); });
  source.addEventListener("state", function (m) { onState(JSON.parse(m.data)); });
  source.addEventListener("end", function () { source.close(); });
  // Keep the elapsed time moving between events.
  setInterval(function () {
    if (root.dataset.state === "running") {
      fetch("/api/builds/" + id).then(function (r) { return r.ok ? r.json() : null; })
        .then(function (b) { if (b) onState(b); });
    }
  }, 5000);
})();
