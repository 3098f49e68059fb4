"""The worker's pieces that need no process: event parsing, outcome, boot-test choice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from osbake.events import Events
from osbake.service.worker import Reporter, WorkerSettings, _outcome, boot_test


class FakeClient:
    def __init__(self, cancel: bool = False) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.cancel = cancel

    def events(self, build_id: int, events: list[dict[str, Any]]) -> bool:
        self.batches.append(events)
        return self.cancel


def test_the_builds_json_lines_become_events_and_other_lines_stay_log_lines() -> None:
    client = FakeClient()
    reporter = Reporter(client, 7)  # type: ignore[arg-type]
    events = Events(reporter)
    events.log(json.dumps({"event": "step", "name": "bootstrap", "time": 1.0}))
    events.log("error: something on stderr")
    events.log(json.dumps({"event": "finish", "ok": False, "step": "bootstrap", "error": "boom"}))
    reporter.flush()
    (batch,) = client.batches
    assert [e["event"] for e in batch] == ["step", "log", "finish"]
    assert batch[1]["line"] == "error: something on stderr"
    assert _outcome(1, [], reporter) == {"ok": False, "error": "boom", "step": "bootstrap"}


def test_a_crash_without_a_finish_event_reports_the_exit_status_and_tail() -> None:
    reporter = Reporter(FakeClient(), 1)  # type: ignore[arg-type]
    outcome = _outcome(139, ["Segmentation fault"], reporter)
    assert not outcome["ok"]
    assert "status 139" in outcome["error"]
    assert "Segmentation fault" in outcome["error"]


def test_tarballs_get_no_boot_test(tmp_path: Path) -> None:
    settings = WorkerSettings(server="http://x", token="t", work_dir=tmp_path)
    manifest = {
        "artifacts": [
            {"file": "a.tar.zst", "format": "tar"},
            {"file": "a.oci.tar", "format": "oci"},
        ]
    }
    assert boot_test(settings, manifest, tmp_path, Events()) == {
        "boot_state": "none",
        "boot_detail": "no boot test: no disk image",
    }
