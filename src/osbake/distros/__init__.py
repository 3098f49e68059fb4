"""Distribution plugins: one small file each, registered by subclassing `Distro`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from osbake.errors import RecipeError

if TYPE_CHECKING:
    from osbake.build import Context
    from osbake.recipe import Arch, Recipe


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
        to grow them (growroot, cloud-init's resizefs call btrfs and xfs_growfs)."""
        raise NotImplementedError

    # Steps.
    def bootstrap(self, ctx: Context) -> None:
        raise NotImplementedError

    def install_packages(self, ctx: Context, packages: list[str]) -> None:
        raise NotImplementedError

    def prepare_boot(self, ctx: Context) -> None:
        """Get the tree ready to boot (initramfs), once every package is installed."""

    def finish(self, ctx: Context) -> None:
        """Undo what the build set up in the tree for itself (e.g. policy-rc.d)."""

    def installed_packages(self, tree: Path) -> list[Package]:
        raise NotImplementedError

    def kernel_footprint(self, tree: Path) -> dict[str, Any] | None:
        """The booted kernel's size (image, modules, initramfs) for the manifest."""
        return None

    def script_environment(self) -> dict[str, str]:
        return {}


def check_distro(recipe: Recipe) -> None:
    """A recipe naming a distro osbake has no plugin for fails here, before anything else."""
    from osbake.distros import debian  # noqa: F401  (registers the plugin)

    if recipe.distro not in Distro.registry:
        from osbake.recipe import locate

        raise RecipeError(
            f"osbake has no distro plugin '{recipe.distro}'",
            location=locate(recipe, ("distro",)),
            hint=f"use one of: {', '.join(sorted(Distro.registry))}",
        )


def get_distro(recipe: Recipe, arch: Arch, options: dict[str, Any]) -> Distro:
    from osbake.distros import debian  # noqa: F401  (registers the plugin)

    cls = Distro.registry.get(recipe.distro)
    if cls is None:
        from osbake.recipe import locate

        raise RecipeError(
            f"there is no distro plugin '{recipe.distro}'",
            location=locate(recipe, ("distro",)),
            hint=f"use one of: {', '.join(sorted(Distro.registry))}",
        )
    return cls(recipe, arch, options)


def distro_element(name: str) -> str:
    from osbake.distros import debian  # noqa: F401

    cls = Distro.registry.get(name)
    return cls.element if cls else name
