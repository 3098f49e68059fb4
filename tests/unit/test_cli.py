"""The CLI turns errors into one paragraph and an exit code, never a traceback."""

from __future__ import annotations

import errno
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


# -- unexpected errors, closed pipes, what reaches the terminal ------------------------------


def failing(exc: BaseException):  # type: ignore[no-untyped-def]
    def handler(args: object) -> int:
        raise exc

    return handler


def test_an_unexpected_error_is_exit_70_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import osbake.cli as cli

    monkeypatch.setattr(cli, "cmd_schema", failing(KeyError("surprise")))
    code, _, err = run_cli(capsys, "schema")
    assert code == 70
    assert err.startswith("error: osbake failed unexpectedly: KeyError: 'surprise'")
    assert "hint: this is a bug in osbake; run the command again with -v" in err
    assert "Traceback" not in err


def test_a_file_the_host_refuses_is_named_and_not_called_a_bug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import osbake.cli as cli

    refused = PermissionError(errno.EACCES, "Permission denied", "/srv/images/out.qcow2")
    monkeypatch.setattr(cli, "cmd_schema", failing(refused))
    code, _, err = run_cli(capsys, "schema")
    assert code == 1
    assert err.startswith("error: /srv/images/out.qcow2: Permission denied")
    assert "bug" not in err and "Traceback" not in err
    assert "may read and write it" in err


def test_a_full_disk_is_said_plainly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import osbake.cli as cli

    monkeypatch.setattr(
        cli, "cmd_schema", failing(OSError(errno.ENOSPC, "No space left on device"))
    )
    code, _, err = run_cli(capsys, "schema")
    assert code == 1
    assert err.startswith("error: No space left on device")
    assert "bug" not in err


def test_an_os_error_without_a_file_is_still_a_bug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import osbake.cli as cli

    monkeypatch.setattr(cli, "cmd_schema", failing(OSError(errno.EBADF, "Bad file descriptor")))
    code, _, err = run_cli(capsys, "schema")
    assert code == 70
    assert "osbake failed unexpectedly: OSError" in err


def test_a_log_file_that_cannot_be_written_is_bad_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ndistro: debian\nrelease: bookworm\noutputs: [tar]\n")
    code, _, err = run_cli(capsys, "build", str(recipe), "--log", str(tmp_path / "no" / "log"))
    assert code == 2
    assert err.startswith(f"error: --log {tmp_path / 'no' / 'log'}: cannot write it")
    assert "hint: give --log a file" in err
    assert not (tmp_path / "out").exists()


def test_with_v_the_traceback_is_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import osbake.cli as cli

    monkeypatch.setattr(cli, "cmd_schema", failing(ZeroDivisionError("x")))
    code, _, err = run_cli(capsys, "-v", "schema")
    assert code == 70
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError" in err


def test_a_closed_standard_output_is_quiet(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import osbake.cli as cli

    monkeypatch.setattr(cli, "cmd_schema", failing(BrokenPipeError(32, "Broken pipe")))
    code, _, err = run_cli(capsys, "schema")
    assert code == 1
    assert err == ""


def test_error_text_is_not_markup_and_not_control_sequences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text('name: "[bold]x[/bold]\\e]0;title\\a\\u202e"\n')
    code, _, err = run_cli(capsys, "validate", str(path))
    assert code == 2
    assert "[bold]x[/bold]" in err  # shown as written, not as markup
    assert "\x1b" not in err and "\u202e" not in err and "\x07" not in err


def test_printable_escapes_control_and_format_characters() -> None:
    from osbake.cli import printable

    assert printable("a\x1b[2Jb\nc\td\u202ee\x85") == "a\\x1b[2Jb\nc\td\\u202ee\\x85"
