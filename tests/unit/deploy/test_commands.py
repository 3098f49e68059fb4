"""The deploy command's own logic: sizes, the report, argument errors."""

from __future__ import annotations

import pytest

from osbake.cli import main
from osbake.deploy import DeployReport, GrowReport, SeedPartition
from osbake.deploy.commands import parse_size, report_lines
from osbake.errors import UsageError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8G", 8 << 30),
        ("8GiB", 8 << 30),
        ("512M", 512 << 20),
        ("1.5G", 3 << 29),
        ("4096", 4096),
        ("1GB", 10**9),
    ],
)
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["8X", "", "-1G", "100"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def test_report_lines() -> None:
    report = DeployReport(
        image="out/a.qcow2",
        target="/dev/sdb",
        target_kind="block device",
        format="qcow2",
        image_size=2 << 30,
        target_size=8 << 30,
        written=1 << 30,
        skipped=1 << 30,
        seconds=12.5,
        artifact_sha256="ab" * 32,
        checksum_source="manifest a.manifest.json",
        verified=True,
        gpt_relocated=True,
        seed=SeedPartition(3, 8 << 30, 2 << 20, "config-2", "iso9660"),
        grown=GrowReport(2, 1 << 30, 7 << 30, "ext4", True),
        notes=["hello"],
    )
    text = "\n".join(report_lines(report))
    assert "wrote out/a.qcow2 (qcow2, 2.0 GiB) to /dev/sdb (block device, 8.0 GiB) in 12.5s" in text
    assert "sha256 matches manifest a.manifest.json" in text
    assert "partition 3 (config-2, iso9660, 2.0 MiB)" in text
    assert "partition 2 from 1.0 GiB to 7.0 GiB, ext4 grown" in text
    assert "note:     hello" in text


def test_deploy_rejects_both_seed_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["deploy", "a.qcow2", "/dev/null", "--seed", "s", "--configdrive", "c"])
    assert caught.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
