"""`--seed`: a NoCloud/ConfigDrive seed is attached read-only and the guest sees it.

The GRUB test media print OSBAKE-SEED-FOUND when a device holds /meta-data, else
OSBAKE-NO-SEED (a failure pattern here, so that a miss fails at once).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from osbake import vm
from osbake.errors import UsageError
from tests.integration.boot_media import MARKER, grub_iso, iso_seed, sha256, vfat_seed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return grub_iso(tmp_path_factory.mktemp("media") / "grub.iso")


FOUND = ["OSBAKE-SEED-FOUND", MARKER]
MISSED = ["OSBAKE-NO-SEED"]


def test_without_a_seed_nothing_is_found(iso: Path) -> None:
    report = vm.boot(iso, expect=["OSBAKE-NO-SEED", MARKER], timeout=60)
    report.check()


def test_a_vfat_seed_is_a_read_only_disk(iso: Path, tmp_path: Path) -> None:
    seed = vfat_seed(tmp_path / "seed.img")
    before = sha256(seed)
    report = vm.boot(iso, seed=seed, expect=FOUND, fail_on=MISSED, timeout=60)
    report.check()
    assert sha256(seed) == before


def test_an_iso_seed_as_a_disk_under_bios(iso: Path, tmp_path: Path) -> None:
    seed = iso_seed(tmp_path / "seed.iso")
    report = vm.boot(iso, seed=seed, expect=FOUND, fail_on=MISSED, timeout=60)
    report.check()


def test_an_iso_seed_as_a_cdrom_under_uefi(iso: Path, tmp_path: Path) -> None:
    seed = iso_seed(tmp_path / "seed.iso")
    report = vm.boot(
        iso,
        firmware=vm.Firmware.UEFI,
        seed=seed,
        seed_bus=vm.SeedBus.CDROM,
        expect=FOUND,
        fail_on=MISSED,
        timeout=90,
    )
    report.check()


def test_a_vfat_seed_cannot_be_a_cdrom(iso: Path, tmp_path: Path) -> None:
    seed = vfat_seed(tmp_path / "seed.img")
    with pytest.raises(UsageError, match="not an ISO 9660 image"):
        vm.boot(iso, seed=seed, seed_bus=vm.SeedBus.CDROM, expect=[MARKER], timeout=10)


def test_a_missing_seed_is_a_usage_error(iso: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--seed: .*does not exist"):
        vm.boot(iso, seed=tmp_path / "nope.iso", expect=[MARKER], timeout=10)
