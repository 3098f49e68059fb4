"""`osbake boot` argument handling, with the library call faked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from osbake import cli, vm


def passed_report(image: Path, **changes: Any) -> vm.BootReport:
    fields: dict[str, Any] = {
        "image": image,
        "firmware": vm.Firmware.BIOS,
        "accelerator": vm.Accel.TCG,
        "passed": True,
        "outcome": vm.Outcome.MATCHED,
        "seconds": 12.0,
        "patterns": [vm.PatternResult("login:", True, 11.5, "debian login: ")],
        "tail": ["debian login: "],
        "console_log": None,
    }
    fields.update(changes)
    return vm.BootReport(**fields)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    made: list[dict[str, Any]] = []

    def boot(image: Path, **kwargs: Any) -> vm.BootReport:
        made.append({"image": image, **kwargs})
        return made[-1].pop("_report", None) or passed_report(image)

    monkeypatch.setattr(vm, "boot", boot)
    return made


def test_defaults(
    calls: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "debian.qcow2"
    assert cli.main(["boot", str(image)]) == 0
    (call,) = calls
    assert call["image"] == image
    assert call["firmware"] == vm.Firmware.BIOS
    assert call["expect"] == ["login:"]
    assert call["fail_on"] == []
    assert call["timeout"] == 300.0
    assert call["memory"] == 1024
    assert call["cpus"] is None
    assert call["accel"] is None
    assert call["seed"] is None
    assert call["seed_bus"] == vm.SeedBus.DISK
    assert call["interactive"] is False
    assert call["log_path"] == tmp_path / "debian.qcow2.console.log"
    assert (
        "passed: debian.qcow2 (bios, tcg) booted: 'login:' after 11.5s" in capsys.readouterr().out
    )


def test_every_flag(calls: list[dict[str, Any]], tmp_path: Path) -> None:
    argv = [
        "boot", str(tmp_path / "d.raw"), "--firmware", "uefi-secureboot",
        "--seed", str(tmp_path / "seed.iso"), "--seed-bus", "cdrom",
        "--expect", "a", "--expect", "b", "--fail-on", "panic", "--timeout", "60",
        "--mem", "2G", "--cpus", "1", "--accel", "tcg", "--console-log", "",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    (call,) = calls
    assert call["firmware"] == vm.Firmware.UEFI_SECUREBOOT
    assert call["seed"] == tmp_path / "seed.iso"
    assert call["seed_bus"] == vm.SeedBus.CDROM
    assert call["expect"] == ["a", "b"]
    assert call["fail_on"] == ["panic"]
    assert call["timeout"] == 60.0
    assert call["memory"] == 2048
    assert call["cpus"] == 1
    assert call["accel"] == vm.Accel.TCG
    assert call["log_path"] is None


def test_a_failed_boot_exits_1_with_the_tail(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "d.qcow2"
    failed = passed_report(
        image,
        passed=False,
        outcome=vm.Outcome.TIMEOUT,
        patterns=[vm.PatternResult("login:")],
        tail=["Begin: Running /scripts/local-block ... done.", "Gave up waiting for root"],
    )
    monkeypatch.setattr(vm, "boot", lambda image, **kwargs: failed)
    assert cli.main(["boot", str(image), "--timeout", "12"]) == 1
    err = capsys.readouterr().err
    assert "error: d.qcow2 (bios, tcg) failed: 'login:' did not show within 12s" in err
    assert "| Gave up waiting for root" in err


def test_json_ends_with_the_report(
    calls: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["boot", str(tmp_path / "d.qcow2"), "--json"]) == 0
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["event"] == "report"
    assert last["passed"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--interactive", "--expect", "x"], "--interactive gives the console to you"),
        (["--interactive", "--fail-on", "x"], "--interactive gives the console to you"),
        (["--cpus", "0"], "--cpus 0 must be at least 1"),
        (["--mem", "much"], "--mem 'much' is not a memory size"),
    ],
)
def test_usage_errors_exit_2(
    calls: list[dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    assert cli.main(["boot", str(tmp_path / "d.qcow2"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert calls == []


def test_interactive_returns_qemus_verdict(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    image = tmp_path / "d.qcow2"
    seen: dict[str, Any] = {}

    def boot(image: Path, **kwargs: Any) -> vm.BootReport:
        seen.update(kwargs)
        return passed_report(image, outcome=vm.Outcome.INTERACTIVE, patterns=[], qemu_status=0)

    monkeypatch.setattr(vm, "boot", boot)
    assert cli.main(["boot", str(image), "--interactive"]) == 0
    assert seen["interactive"] is True
    assert seen["events"] is not None


def test_the_log_is_not_kept_beside_an_image_in_a_read_only_folder(
    calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("osbake.vm.commands.os.access", lambda *a: False)
    assert cli.main(["boot", str(tmp_path / "d.qcow2")]) == 0
    assert calls[0]["log_path"] is None


def test_boot_is_listed_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["boot", "--help"])
    out = capsys.readouterr().out
    for flag in ("--firmware", "--seed", "--expect", "--timeout", "--mem", "--interactive"):
        assert flag in out


def test_datasource_ec2_serves_during_the_boot(
    calls: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.request

    from osbake.firstboot.metadata import TOKEN_TTL_HEADER

    seen: list[int] = []

    def boot(image: Path, **kwargs: Any) -> vm.BootReport:
        # While the boot runs, the service answers on the port QEMU forwards to.
        port = int(kwargs["user_net"][1].rsplit(" ", 1)[1])
        token = urllib.request.Request(
            f"http://127.0.0.1:{port}/latest/api/token",
            method="PUT",
            headers={TOKEN_TTL_HEADER: "60"},
        )
        with urllib.request.urlopen(token, timeout=5) as response:
            seen.append(response.status)
        calls.append({"image": image, **kwargs})
        return passed_report(image)

    monkeypatch.setattr(vm, "boot", boot)
    argv = ["boot", str(tmp_path / "d.qcow2"), "--datasource", "ec2", "--hostname", "web-1"]
    assert cli.main([*argv, "--console-log", ""]) == 0
    (call,) = calls
    assert seen == [200]
    assert call["seed"] is None
    assert call["user_net"][0] == "net=169.254.0.0/16"
    assert call["user_net"][1].startswith("guestfwd=tcp:169.254.169.254:80-cmd:")
    assert "manufacturer=Amazon EC2" in " ".join(call["extra_args"])


def test_datasource_nocloud_attaches_a_seed_it_makes(
    calls: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from osbake.firstboot import datasource

    made: list[bytes] = []

    def write_volume(content: Any, output: Path, **kwargs: Any) -> Path:
        # The volume's writer (xorriso) is tested in tests/integration; the content here.
        output.write_bytes(content.files["meta-data"])
        return output

    def boot(image: Path, **kwargs: Any) -> vm.BootReport:
        made.append(kwargs["seed"].read_bytes())
        return passed_report(image)

    monkeypatch.setattr(datasource, "write_volume", write_volume)
    monkeypatch.setattr(vm, "boot", boot)
    argv = ["boot", str(tmp_path / "d.qcow2"), "--datasource", "nocloud", "--hostname", "web-1"]
    assert cli.main([*argv, "--console-log", ""]) == 0
    (seed,) = made
    assert b"local-hostname: web-1" in seed


@pytest.mark.parametrize(
    "extra",
    [
        ["--hostname", "web-1"],  # instance options need --datasource
        ["--datasource", "ec2", "--seed", "s.iso"],
        ["--datasource", "none", "--user", "ops"],
        ["--datasource", "ec2", "--hostname", "bad_name!"],
    ],
)
def test_datasource_usage_errors(
    calls: list[dict[str, Any]], tmp_path: Path, extra: list[str]
) -> None:
    assert cli.main(["boot", str(tmp_path / "d.qcow2"), *extra]) == 2
    assert calls == []


def test_arch_and_firmware_default_to_the_manifest_beside_the_image(tmp_path: Path) -> None:
    import argparse
    import json

    from osbake.vm.commands import _defaults_from_manifest

    image = tmp_path / "board.qcow2"
    image.write_bytes(b"")
    manifest = {
        "manifest_version": 1, "osbake_version": "0", "image": "board", "name": "board",
        "arch": "arm64", "distro": "debian", "release": "bookworm", "boot": ["extlinux"],
        "recipe": {}, "recipe_sha256": "0" * 64,
        "artifacts": [{"file": "board.qcow2", "format": "qcow2", "sha256": "0" * 64, "size": 0}],
    }  # fmt: skip
    (tmp_path / "board.manifest.json").write_text(json.dumps(manifest))
    args = argparse.Namespace(arch=None, firmware=None)
    _defaults_from_manifest(args, image)
    assert (args.arch, args.firmware) == ("arm64", "extlinux")
    given = argparse.Namespace(arch="arm64", firmware="uefi")
    _defaults_from_manifest(given, image)
    assert (given.arch, given.firmware) == ("arm64", "uefi")
    alone = argparse.Namespace(arch=None, firmware=None)
    _defaults_from_manifest(alone, tmp_path / "other.qcow2")
    assert (alone.arch, alone.firmware) == ("amd64", "bios")
