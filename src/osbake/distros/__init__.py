"""Distribution plugins: one small file each, registered by subclassing `Distro`.

A distro family is one module here, named as the recipe's `distro:` names it
(osbake/distros/<name>.py), plus its elements. The plugin owns the family's
package manager: bootstrapping a tree, installing packages, the environment its
tools need during the build, where it keeps downloaded packages, and the
branding the bootloader shows.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from osbake.errors import RecipeError

if TYPE_CHECKING:
    from osbake.elements.options import OptionValues
    from osbake.events import Events
    from osbake.manifest import Manifest
    from osbake.recipe import Arch, Recipe
    from osbake.sbom import Installed


class Work(Protocol):
    """What a distro's steps are given (osbake.context.Context is one).

    A protocol rather than the context itself: the context holds the plan, which
    holds the distro, so the plugins cannot import it back.
    """

    @property
    def tree(self) -> Path: ...

    @property
    def workdir(self) -> Path: ...

    @property
    def packages(self) -> Path: ...

    @property
    def events(self) -> Events: ...

    @property
    def options(self) -> OptionValues: ...

    @property
    def epoch(self) -> int: ...


@dataclass(frozen=True)
class Package:
    """One installed package as the image's package database records it."""

    name: str
    version: str
    arch: str
    source: str
    source_version: str


class Distro:
    """What osbake needs from a distribution."""

    name: ClassVar[str]
    element: ClassVar[str]  # the element every image of this distro gets
    # The modules whose code shapes what the plugin's steps make (hashed into the keys
    # of the steps that call it).
    modules: ClassVar[tuple[str, ...]] = ("osbake.distros",)
    # Where the package manager keeps downloaded packages in the tree: the build's
    # package folder is mounted there while packages may be installed.
    package_cache_dir: ClassVar[str]
    # Bootloader branding: the folder of the distro's own GRUB under /boot/efi/EFI,
    # and the title of the GRUB menu entry.
    efi_dir: ClassVar[str]
    menu_title: ClassVar[str]
    registry: ClassVar[dict[str, type[Distro]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Distro.registry[cls.name] = cls

    def __init__(self, recipe: Recipe, arch: Arch, options: dict[str, Any]) -> None:
        self.recipe = recipe
        self.arch = arch
        self.options = options

    # Inputs to the plan's content keys.
    def describe_sources(self) -> list[str]:
        raise NotImplementedError

    def mirror_state(self) -> dict[str, dict[str, str]]:
        raise NotImplementedError

    def bootstrap_inputs(self) -> dict[str, Any]:
        raise NotImplementedError

    def kernel_packages(self) -> list[str]:
        raise NotImplementedError

    def bootloader_packages(self, firmware: list[Any]) -> list[str]:
        """Packages the image needs to boot with these firmwares (osbake installs them)."""
        raise NotImplementedError

    def filesystem_packages(self, filesystems: list[str]) -> list[str]:
        """Packages the image needs for its own file systems: to check them at boot and
        to grow them (growroot, cloud-init's resizefs call btrfs and xfs_growfs).
        'lvm' in the list asks for the tools of LVM volume groups, 'luks' for LUKS."""
        raise NotImplementedError

    # Steps.
    def bootstrap(self, ctx: Work) -> None:
        raise NotImplementedError

    def install_packages(self, ctx: Work, packages: list[str]) -> None:
        raise NotImplementedError

    def prepare_boot(self, ctx: Work) -> None:
        """Get the tree ready to boot (initramfs), once every package is installed."""

    def finish(self, ctx: Work) -> None:
        """Undo what the build set up in the tree for itself (e.g. policy-rc.d)."""

    def installed_packages(self, tree: Path) -> list[Package]:
        raise NotImplementedError

    def kernel_footprint(self, tree: Path) -> dict[str, Any] | None:
        """The booted kernel's size (image, modules, initramfs) for the manifest."""
        return None

    def bill_of_materials(
        self, tree: Path, manifest: Manifest, packages: Path
    ) -> list[Installed] | None:
        """The installed packages with what an SBOM lists (None: this distro has none).

        `packages` is the build's package folder (the files the packages came from).
        """
        return None

    def script_environment(self) -> dict[str, str]:
        return {}

    def tool_environment(self, options: OptionValues) -> dict[str, str]:
        """What the package manager needs in every step's environment (a proxy...)."""
        return {}


# A distro module's name: what a recipe may name (checked before it is imported).
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Modules in this package that are not distro families.
_HELPERS = frozenset({"apt_sources", "kernels"})


def load_distro(name: str) -> type[Distro] | None:
    """The plugin of a distro family, loaded by name (osbake/distros/<name>.py)."""
    if name not in Distro.registry and _NAME.match(name) and name not in _HELPERS:
        try:
            importlib.import_module(f"osbake.distros.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"osbake.distros.{name}":
                raise
    return Distro.registry.get(name)


def known_distros() -> list[str]:
    """Every distro family osbake has a plugin for."""
    folder = Path(__file__).parent
    for path in folder.glob("*.py"):
        if path.stem != "__init__":
            load_distro(path.stem)
    return sorted(Distro.registry)


def check_distro(recipe: Recipe) -> None:
    """A recipe naming a distro osbake has no plugin for fails here, before anything else."""
    _plugin(recipe)


def get_distro(recipe: Recipe, arch: Arch, options: dict[str, Any]) -> Distro:
    return _plugin(recipe)(recipe, arch, options)


def _plugin(recipe: Recipe) -> type[Distro]:
    cls = load_distro(recipe.distro)
    if cls is None:
        from osbake.recipe import locate

        raise RecipeError(
            f"osbake has no distro plugin '{recipe.distro}'",
            location=locate(recipe, ("distro",)),
            hint=f"use one of: {', '.join(known_distros())}",
        )
    return cls


def distro_element(name: str) -> str:
    cls = load_distro(name)
    return cls.element if cls else name
