"""The distro registry: a family is loaded by its name, from one module of that name."""

from __future__ import annotations

import sys

import pytest

from osbake.distros import Distro, distro_element, known_distros, load_distro
from osbake.distros.debian import Debian, apt_installs
from osbake.elements.options import OptionValues


def test_a_family_is_loaded_by_name() -> None:
    assert load_distro("debian") is Debian
    assert distro_element("debian") == "debian"
    assert known_distros() == ["debian"]


@pytest.mark.parametrize("name", ["fedora", "../debian", "Debian", "kernels", "apt_sources", ""])
def test_a_name_that_is_no_family_loads_nothing(name: str) -> None:
    assert load_distro(name) is None
    assert f"osbake.distros.{name}" not in sys.modules or name in ("kernels", "apt_sources")


def test_the_plugin_owns_its_package_manager() -> None:
    assert Debian.package_cache_dir == "/var/cache/apt/archives"
    assert Debian.efi_dir == "debian"
    assert "osbake.distros.debian" in Debian.modules
    assert issubclass(Debian, Distro)


def test_apt_settings_reach_the_tools_through_the_plugin() -> None:
    plugin = Debian.__new__(Debian)
    without: OptionValues = {}
    assert plugin.tool_environment(without) == {
        "DEBIAN_FRONTEND": "noninteractive",
        "DEBCONF_NONINTERACTIVE_SEEN": "true",
    }
    with_proxy: OptionValues = {"apt-proxy": {"proxy": "http://proxy.invalid:3142"}}
    assert plugin.tool_environment(with_proxy)["OSBAKE_APT_PROXY"] == "http://proxy.invalid:3142"


def test_what_apt_says_it_would_install() -> None:
    """`apt-get -s install`'s Inst lines: new packages, upgrades, an epoch, an arch."""
    simulation = (
        "Reading package lists...\n"
        "The following NEW packages will be installed:\n"
        "  openssh-server python3.11-minimal\n"
        "Inst sed [4.9-1] (4.9-1+deb12u1 Debian:12.12/oldstable [arm64])\n"
        "Inst python3.11-minimal (3.11.2-6+deb12u9 Debian:12.12/oldstable [arm64])\n"
        "Inst libc6:i386 (2.36-9+deb12u14 Debian:12.12/oldstable [i386])\n"
        "Inst openssh-server (1:9.2p1-2+deb12u10 Debian-Security:12/oldstable [arm64]) []\n"
        "Conf sed (4.9-1+deb12u1 Debian:12.12/oldstable [arm64])\n"
    )
    assert apt_installs(simulation) == {
        "sed": "4.9-1+deb12u1",
        "python3.11-minimal": "3.11.2-6+deb12u9",
        "libc6": "2.36-9+deb12u14",
        "openssh-server": "1:9.2p1-2+deb12u10",
    }
