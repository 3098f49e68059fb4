"""The worker's pieces that need no process: event parsing, outcome, boot-test choice."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from osbake.errors import UsageError
from osbake.events import Events
from osbake.service import build_users
from osbake.service.worker import Outputs, Reporter, WorkerSettings, _outcome, boot_test


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
    assert boot_test(settings, manifest, Outputs(tmp_path, None), Events()) == {
        "boot_state": "none",
        "boot_detail": "no boot test: no disk image",
    }


def test_outputs_are_plain_files_of_the_build_and_nothing_it_links_to(tmp_path: Path) -> None:
    secret = tmp_path / "secret_key"
    secret.write_text("the console's key")
    out = tmp_path / "out"
    out.mkdir()
    (out / "image.tar").write_bytes(b"image")
    (out / "link.tar").symlink_to(secret)
    os.link(out / "image.tar", out / "cached.tar")  # its own file, also in its step cache
    outputs = Outputs(out, None)
    with outputs.open("image.tar") as handle:
        assert handle.read() == b"image"
    with outputs.open("cached.tar") as handle:
        assert handle.read() == b"image"
    for name in ("link.tar", "../secret_key", "missing.tar", ".."):
        with pytest.raises(UsageError), outputs.open(name):
            pass


def test_a_file_of_another_user_is_not_an_output(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    (tmp_path / "theirs.tar").write_bytes(b"x")
    os.chown(tmp_path / "theirs.tar", 65534, 65534)
    (tmp_path / "secret").write_bytes(b"root's")
    os.link(tmp_path / "secret", tmp_path / "hard.tar")  # a second name of root's file
    build_user = Outputs(tmp_path, None)
    build_user.uid = 65533
    for name in ("theirs.tar", "hard.tar"):
        with pytest.raises(UsageError, match="plain file"), build_user.open(name):
            pass


def test_a_build_gets_no_secret_of_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSBAKE_WORKER_TOKEN", "osb_secret")
    monkeypatch.setenv("OSBAKE_DATABASE_URL", "postgresql://u:pw@db/x")
    monkeypatch.setenv("OSBAKE_MIRROR", "http://mirror.invalid/debian")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws")
    user = build_users.BuildUser("osbake-build", 999, 999, Path("/var/lib/osbake-build"))
    env = build_users.environment(user)
    assert "osb_secret" not in env.values()
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert "OSBAKE_DATABASE_URL" not in env
    assert env["OSBAKE_MIRROR"] == "http://mirror.invalid/debian"
    assert env["HOME"] == "/var/lib/osbake-build"
    assert user.command(["osbake", "build"])[-2:] == ["osbake", "build"]
    assert "--reuid=999" in user.command(["true"])


def test_a_live_iso_is_booted_with_each_firmware(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from osbake import run as runner

    (tmp_path / "live.iso").write_bytes(b"iso")
    booted: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> runner.Completed:
        booted.append(list(argv))
        return runner.Completed(list(argv), 0)

    monkeypatch.setattr(runner, "run", fake_run)
    settings = WorkerSettings(server="http://x", token="t", work_dir=tmp_path)
    manifest = {
        "artifacts": [{"file": "live.iso", "format": "iso"}],
        "recipe": {"boot": ["bios", "uefi"]},
    }
    result = boot_test(settings, manifest, Outputs(tmp_path, None), Events())
    assert result["boot_state"] != "none"
    firmwares = [a[a.index("--firmware") + 1] for a in booted]
    assert firmwares == ["bios", "uefi"]
    assert all(str(tmp_path / "live.iso") in a for a in booted)
