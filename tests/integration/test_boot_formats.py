"""`osbake boot` on each image format; the image file is bit-identical afterwards.

The test disk's boot sector writes to its own disk before it prints its marker, so
a boot that wrote through to the image would change it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from osbake import vm
from osbake.errors import ArtifactError
from osbake.events import Event, Events
from tests.integration.boot_media import WRITTEN, convert, sha256, writer_disk

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def raw_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return writer_disk(tmp_path_factory.mktemp("disk") / "writer.raw")


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "vmdk", "vpc", "vhdx"])
def test_each_format_boots_and_stays_unchanged(raw_disk: Path, tmp_path: Path, fmt: str) -> None:
    image = raw_disk if fmt == "raw" else convert(raw_disk, fmt, tmp_path / f"writer.{fmt}")
    before = sha256(image)
    mtime = image.stat().st_mtime_ns
    report = vm.boot(image, expect=[WRITTEN], timeout=60)
    report.check()
    assert sha256(image) == before
    assert image.stat().st_mtime_ns == mtime


def test_a_fixed_vhd_boots_as_a_vhd_on_the_hyperv_devices(raw_disk: Path, tmp_path: Path) -> None:
    # A fixed VHD (osbake's vhd output) is raw data and a footer, which QEMU's probe
    # takes for raw: osbake reads it as a VHD, and --hardware target picks Hyper-V's.
    vhd = tmp_path / "writer.vhd"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on",
         str(raw_disk), str(vhd)],
        check=True,
    )  # fmt: skip
    before = sha256(vhd)
    seen: list[Event] = []
    events = Events()
    events.add(seen.append)
    report = vm.boot(
        vhd, expect=[WRITTEN], timeout=60, hardware=vm.HardwareChoice("target"), events=events
    )
    report.check()
    assert report.hardware == vm.Hardware(vm.Nic.TULIP, vm.DiskBus.IDE)
    commands = [e["line"] for e in seen if e["event"] == "command"]
    assert any(" -F vpc " in line for line in commands), commands
    qemu = next(line for line in commands if line.startswith("/") and "-machine" in line)
    assert "-machine pc " in qemu and "ide-hd,drive=drive0" in qemu and "model=tulip" in qemu
    assert sha256(vhd) == before


def test_raw_tar_xz_is_extracted_and_boots(raw_disk: Path, tmp_path: Path) -> None:
    archive = tmp_path / "writer.raw.tar.xz"
    subprocess.run(
        ["tar", "-C", str(raw_disk.parent), "-cJf", str(archive), raw_disk.name], check=True
    )
    before = sha256(archive)
    report = vm.boot(archive, expect=[WRITTEN], timeout=60, workdir=tmp_path)
    report.check()
    assert sha256(archive) == before
    # The extracted copy and the overlay went with the temporary directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["writer.raw.tar.xz"]


def test_a_compressed_raw_image_is_refused_with_a_hint(raw_disk: Path, tmp_path: Path) -> None:
    compressed = tmp_path / "writer.raw.xz"
    compressed.write_bytes(subprocess.run(
        ["xz", "-c", str(raw_disk)], check=True, capture_output=True
    ).stdout)  # fmt: skip
    with pytest.raises(ArtifactError, match="compressed with xz") as caught:
        vm.boot(compressed, expect=[WRITTEN], timeout=10)
    assert caught.value.hint is not None
    assert "xz -dk" in caught.value.hint


@pytest.mark.parametrize("bus", list(vm.DiskBus))
def test_seabios_boots_from_each_disk_bus(raw_disk: Path, bus: vm.DiskBus) -> None:
    report = vm.boot(
        raw_disk, expect=[WRITTEN], timeout=60, hardware=vm.Hardware(vm.Nic.E1000, bus)
    )
    report.check()
    assert report.hardware.disk_bus == bus
