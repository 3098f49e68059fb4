"""`osbake publish` and `osbake sync` through the CLI (no processes: unsigned, local)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osbake.cli import main
from tests.publish_helpers import make_build


def test_publish_then_sync_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = make_build(tmp_path / "out")
    repo, mirror = tmp_path / "repo", tmp_path / "mirror"
    assert main(["publish", str(manifest), "--repo", str(repo), "--label", "beta"]) == 0
    out = capsys.readouterr().out
    assert "published: org.osbake:demo:bookworm:amd64 20261120 (beta), 2 files" in out
    assert main(["sync", str(repo), str(mirror), "ftype=disk1.img", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["event"] == "synced"
    assert last["transferred"] == ["demo/bookworm/amd64/20261120/demo.qcow2"]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["sync", "SRC", "DST", "arch"], 2, "write key=value, key!=value or key~regex"),
        (["sync", "SRC", "DST", "--keyring", "nothere.gpg"], 2, "--keyring nothere.gpg: no such"),
        (["sync", "nowhere", "DST"], 1, "nowhere: no such directory"),
        (["publish", "missing.qcow2", "--repo", "R"], 2, "missing.qcow2: no such file"),
    ],
)
def test_bad_input_gets_a_message_and_an_exit_code(
    argv: list[str],
    code: int,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "SRC").mkdir()
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in " ".join(err.split())
    assert "Traceback" not in err
