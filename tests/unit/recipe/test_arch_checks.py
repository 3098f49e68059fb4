"""The loader refuses architectures and firmwares that cannot go together, with the
file and line of the entry to change (osbake.arch says which firmwares an arch has)."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbake.arch import Arch, Firmware
from osbake.errors import RecipeError
from osbake.recipe import load, select_variant

VM = "name: t\nkernel: generic\nelements: [vm]\noutputs: [qcow2]\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> RecipeError:
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load(path)
    return info.value


def line_of(err: RecipeError) -> tuple[Path | None, int | None]:
    assert err.location is not None
    return err.location.file, err.location.line


def test_bios_on_arm64_is_refused_at_its_line(tmp_path: Path) -> None:
    err = refused(tmp_path, VM + "arch: [arm64]\nboot:\n  - uefi\n  - bios\n")
    assert line_of(err) == (tmp_path / "recipe.yaml", 8)
    assert "arm64 does not boot with bios" in err.message
    assert "no BIOS" in err.message
    assert err.hint is not None and "arm64 boots with uefi, uefi-secureboot" in err.hint
    assert "remove bios" in err.hint
    assert f"{tmp_path / 'recipe.yaml'}:8" in err.render()


def test_secure_boot_on_i386_is_refused(tmp_path: Path) -> None:
    err = refused(tmp_path, VM + "arch: i386\nboot: [bios, uefi-secureboot]\n")
    assert line_of(err) == (tmp_path / "recipe.yaml", 6)
    assert "i386 does not boot with uefi-secureboot" in err.message
    assert "no signed shim" in err.message
    assert err.hint is not None and "uefi boots without Secure Boot" in err.hint


def test_no_firmware_at_all_on_s390x(tmp_path: Path) -> None:
    err = refused(tmp_path, VM + "arch: s390x\nboot: [uefi]\n")
    assert line_of(err) == (tmp_path / "recipe.yaml", 6)
    assert "installs no bootloader for s390x" in err.message
    assert err.hint is not None and "remove 'boot:'" in err.hint


def test_several_arches_get_the_variant_hint(tmp_path: Path) -> None:
    err = refused(tmp_path, VM + "arch: [amd64, arm64]\nboot: [bios, uefi]\n")
    assert "arm64 does not boot with bios" in err.message
    assert err.hint is not None and "variant of its own" in err.hint


def test_a_variant_that_changes_the_arch_is_checked_against_the_base_boot(
    tmp_path: Path,
) -> None:
    text = VM + "boot: [bios, uefi]\nvariants:\n  arm:\n    arch: arm64\n"
    err = refused(tmp_path, text)
    assert line_of(err) == (tmp_path / "recipe.yaml", 5)  # the base's boot: [bios, ...]
    assert "(variant 'arm')" in err.message
    assert err.hint is not None and "give variant 'arm' a 'boot:' of its own" in err.hint


def test_a_variant_boot_entry_is_located_in_the_variant(tmp_path: Path) -> None:
    text = VM + "boot: [uefi]\nvariants:\n  pc:\n    arch: i386\n    boot:\n      - bios\n"
    text += "      - uefi-secureboot\n"
    err = refused(tmp_path, text)
    assert line_of(err) == (tmp_path / "recipe.yaml", 11)
    assert err.location is not None and err.location.key == "variants.pc.boot[1]"


def test_possible_combinations_load(tmp_path: Path) -> None:
    text = VM + (
        "arch: [amd64]\nboot: [bios, uefi, uefi-secureboot]\nvariants:\n"
        "  arm: {arch: arm64, boot: [uefi, uefi-secureboot]}\n"
        "  pc32: {arch: i386, boot: [bios, uefi]}\n"
        "  container: {arch: [amd64, arm64, ppc64el, s390x], boot: [], outputs: [tar]}\n"
    )
    recipe = load(write(tmp_path, text))
    assert select_variant(recipe, "arm").arch == [Arch.ARM64]
    assert select_variant(recipe, "pc32").boot == [Firmware.BIOS, Firmware.UEFI]


def test_an_unknown_arch_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    err = refused(tmp_path, "name: t\narch: [amd64, vax]\n")
    assert line_of(err) == (tmp_path / "recipe.yaml", 2)
    assert "does not know the architecture 'vax'" in err.message
    assert err.hint is not None and "'amd64'" in err.hint and "'riscv64'" in err.hint


@pytest.mark.parametrize(("written", "debian"), [("x86_64", "amd64"), ("aarch64", "arm64")])
def test_another_name_of_a_known_arch_gets_its_debian_name(
    tmp_path: Path, written: str, debian: str
) -> None:
    err = refused(tmp_path, f"name: t\nrelease: bookworm\narch: {written}\n")
    assert line_of(err) == (tmp_path / "recipe.yaml", 3)
    assert f"'{written}' is not a Debian architecture name" in err.message
    assert err.hint is not None and err.hint.startswith(f"write {debian} ")
