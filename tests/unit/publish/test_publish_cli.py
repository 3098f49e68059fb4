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


@pytest.mark.parametrize(
    "argv",
    [
        ["sync", "REPO", "MIRROR", "ftype=disk1.img", "--max", "1"],
        ["sync", "REPO", "MIRROR", "--max", "1", "ftype=disk1.img"],
        ["sync", "--max", "1", "REPO", "MIRROR", "ftype=disk1.img"],
        ["sync", "REPO", "--jobs", "2", "MIRROR", "--max", "1", "arch=amd64", "ftype=disk1.img"],
    ],
    ids=["last", "after-options", "options-first", "between"],
)
def test_sync_filters_may_stand_anywhere(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = make_build(tmp_path / "out")
    repo, mirror = tmp_path / "repo", tmp_path / "mirror"
    assert main(["publish", str(manifest), "--repo", str(repo)]) == 0
    places = {"REPO": str(repo), "MIRROR": str(mirror)}
    assert main([places.get(a, a) for a in argv]) == 0
    assert "1 items selected, 1 transferred" in capsys.readouterr().out
    assert [p.name for p in mirror.rglob("demo.*")] == ["demo.qcow2"]


def test_unknown_options_are_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sync", "SRC", "DST", "--bogus", "arch=amd64"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["validate", "recipe.yaml", "extra"])  # commands without filters take none
    assert "unrecognized arguments: extra" in capsys.readouterr().err
