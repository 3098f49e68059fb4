"""The distro registry: a family is loaded by its name, from one module of that name."""

from __future__ import annotations

import sys

import pytest

from osbake.distros import Distro, distro_element, known_distros, load_distro
from osbake.distros.debian import Debian
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
