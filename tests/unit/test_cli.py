"""The CLI turns errors into one paragraph and an exit code, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbake.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nrelase: bookworm\n")
    code, _, err = run_cli(capsys, "validate", str(path))
    assert code == 2
    assert f"{path}:2" in err and "did you mean 'release'" in err
    assert "Traceback" not in err


def test_unknown_element(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nelements:\n  - users\n  - openssh-sever\n")
    code, _, err = run_cli(capsys, "validate", str(path))
    assert code == 2
    assert f"{path}:4" in err and "openssh-server" in err


def test_validate_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nvariants:\n  a: {packages: [vim]}\n")
    code, out, _ = run_cli(capsys, "validate", str(path))
    assert code == 0 and "valid" in out


def test_schema_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    code, out, _ = run_cli(capsys, "schema")
    assert code == 0 and json.loads(out)["title"] == "Recipe"


def test_elements_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "elements", "show", "users")
    assert code == 0 and "lock_root" in out and "post-install" in out


def test_inspect_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "inspect", str(tmp_path / "nope.tar.zst"))
    assert code == 2 and "is not a file" in err
