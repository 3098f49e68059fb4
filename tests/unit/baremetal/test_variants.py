"""The example's variants resolve to the elements, kernels and command lines they promise."""

from __future__ import annotations

from typing import Any

import pytest

from osbake.distros.debian import Debian
from osbake.plan import resolve_plan
from osbake.recipe import load
from tests.conftest import EXAMPLES


@pytest.fixture(autouse=True)
def fixed_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    state = {"http://mirror.invalid/debian bookworm": {"sha256": "0" * 64, "date": "d"}}
    monkeypatch.setattr(Debian, "mirror_state", lambda self: dict(state))
    monkeypatch.setattr(Debian, "_mmdebstrap_version", "mmdebstrap 1.3.5", raising=False)
    monkeypatch.setattr(
        Debian, "describe_sources", lambda self: ["deb http://mirror.invalid/debian bookworm main"]
    )


def plan(variant: str | None) -> Any:
    return resolve_plan(load(EXAMPLES / "debian-cloud.yaml"), variant)


def names(variant: str | None) -> list[str]:
    return [e.name for e in plan(variant).elements]


def test_the_base_keeps_the_cloud_kernel_untrimmed() -> None:
    base = plan(None)
    assert "linux-image-cloud-amd64" in base.packages
    assert "server-kernel" not in names(None)
    assert "bare-metal" not in names(None)


def test_generic_is_the_whole_generic_kernel() -> None:
    generic = plan("generic")
    assert "linux-image-amd64" in generic.packages
    assert "server-kernel" not in names("generic")


def test_kernel_server_brings_the_trimming_element() -> None:
    server = plan("server")
    assert "linux-image-amd64" in server.packages
    assert "linux-image-cloud-amd64" not in server.packages
    assert "server-kernel" in names("server")
    # The rules must exist before the packages step installs the kernel.
    pre_install = server.step("pre-install")
    assert "server-kernel/pre-install/10-server-kernel" in pre_install.scripts
    assert server.options["server-kernel"]["compress"] == "xz"
    assert server.options["server-kernel"]["initramfs"] == "server"
    assert "sound" in server.options["server-kernel"]["families"]


def test_baremetal_has_consoles_firmware_and_its_datasources() -> None:
    baremetal = plan("baremetal")
    elements = names("baremetal")
    assert {"bare-metal", "server-kernel", "cloud-init", "growroot", "vm"} <= set(elements)
    assert elements.index("cloud-init") < elements.index("bare-metal")
    assert "firmware-linux-free" in baremetal.packages
    words = baremetal.cmdline.split()
    assert "console=tty0" in words and "console=ttyS0,115200" in words
    assert words.index("console=tty0") < words.index("console=ttyS0,115200")  # serial last
    assert baremetal.options["bare-metal"]["datasources"] == ["ConfigDrive", "NoCloud", "None"]
    finalise = baremetal.step("finalise").scripts
    assert finalise.index("cloud-init/finalise/60-cloud-init") < finalise.index(
        "bare-metal/finalise/61-bare-metal-cloud-init"
    )
    assert baremetal.image == "debian-cloud-baremetal"
