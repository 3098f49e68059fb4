"""A build's inputs, paths and services: what every step and plugin is given.

The resolved `Plan` (the recipe, its elements, the distro plugin, the disk layout
and the steps with their content keys) and the `Context` of one run of it: its
folders, settings, events and the output folder it writes to. What steps produce
(the manifest, the bootloader set-up, the disk) is not here: the step runner
(osbake.steps) owns those results.

The lower layers (disk/, distros/, elements/phases.py, outputs/) import this
module; it imports none of them but the types a plan is made of.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from osbake import run as runner
from osbake.disk.layout import DiskPlan
from osbake.distros import Distro
from osbake.elements.model import Element, Phase
from osbake.elements.options import OptionValues
from osbake.events import Events
from osbake.manifest import build_epoch
from osbake.recipe import Arch, OutputFormat, Recipe
from osbake.settings import Settings
from osbake.workspace import partial_name


class StepKind(StrEnum):
    BOOTSTRAP = "bootstrap"
    PHASE = "phase"
    PACKAGES = "packages"
    MANIFEST = "manifest"
    DISK = "disk"
    OUTPUT = "output"


@dataclass(frozen=True)
class Step:
    name: str
    kind: StepKind
    key: str
    inputs: dict[str, Any]
    phase: Phase | None = None
    scripts: tuple[str, ...] = ()
    output: OutputFormat | None = None
    # The built-in actions it runs (osbake.steps) and the modules whose code shapes
    # its result (hashed into its key).
    actions: tuple[str, ...] = ()
    code: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == StepKind.PHASE:
            return ", ".join(self.scripts) if self.scripts else "(no scripts)"
        if self.kind == StepKind.PACKAGES:
            return " ".join(self.inputs.get("packages", [])) or "(none)"
        if self.kind == StepKind.BOOTSTRAP:
            return f"{self.inputs['distro']} {self.inputs['release']} {self.inputs['arch']}"
        if self.kind == StepKind.OUTPUT:
            return str(self.output)
        if self.kind == StepKind.DISK:
            disk = self.inputs["disk"]
            parts = ", ".join(f"{p['name']} {p['size']}" for p in disk["partitions"])
            groups = "".join(
                f"; {g['name']}: " + ", ".join(f"{v['name']} {v['size']}" for v in g["volumes"])
                for g in disk.get("volume_groups", [])
            )
            return f"{disk['table']}: {parts}{groups}"
        return ""


@dataclass
class Plan:
    recipe: Recipe
    arch: Arch
    image: str
    elements: list[Element]
    options: OptionValues
    packages: list[str]
    distro: Distro
    environment: dict[str, str]
    disk: DiskPlan | None = None
    cmdline: str = ""
    output_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    # The recipe's own packages that no element, kernel or bootloader asks for. They
    # are installed in a step of their own, after the others: editing the recipe's
    # list (what users do most) then leaves the large install cached.
    recipe_packages: list[str] = field(default_factory=list)

    @property
    def variant(self) -> str | None:
        return self.recipe.variant

    @property
    def base_packages(self) -> list[str]:
        """Every package but the recipe's own: elements', the kernel's, the bootloader's."""
        return [p for p in self.packages if p not in self.recipe_packages]

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "recipe": self.recipe.name,
            "variant": self.variant,
            "arch": str(self.arch),
            "elements": [
                {"name": e.name, "sha256": e.content_hash(), "origin": e.origin}
                for e in self.elements
            ],
            "packages": self.packages,
            "steps": [
                {"name": s.name, "kind": str(s.kind), "key": s.key, "describe": s.describe()}
                for s in self.steps
            ],
        }


class DiskImage(Protocol):
    """The assembled disk image, as the outputs made from it read it."""

    @property
    def path(self) -> Path: ...

    @property
    def size(self) -> int: ...


@dataclass
class Context:
    """One build of a plan: its folders, settings, events and output folder."""

    plan: Plan
    settings: Settings
    events: Events
    workdir: Path
    outdir: Path
    # This build's token in the output folder (see osbake.workspace.claim_outputs).
    output_token: str = ""
    partials: dict[Path, Path] = field(default_factory=dict)  # partial -> final
    # The disk image the disk outputs are made from: handed over by the step runner
    # once the disk step has its result.
    disk: DiskImage | None = None
    # Where the tree is while a step writes its own layer (the bootstrap's layer).
    tree_dir: Path | None = None
    started: float = field(default_factory=time.time)

    @property
    def recipe(self) -> Recipe:
        return self.plan.recipe

    @property
    def distro(self) -> Distro:
        return self.plan.distro

    @property
    def options(self) -> OptionValues:
        return self.plan.options

    @property
    def tree(self) -> Path:
        """The root tree: the mount point where the step cache stacks its layers."""
        return self.tree_dir or self.workdir / "tree"

    @property
    def packages(self) -> Path:
        """This build's package folder (shared with the host's pool, see package_pool)."""
        return self.workdir / "packages"

    @cached_property
    def epoch(self) -> int:
        """When the outputs say they were made: SOURCE_DATE_EPOCH or the mirror's date."""
        dates = (state.get("date", "") for state in self.plan.distro.mirror_state().values())
        return build_epoch(dates)

    @property
    def stage(self) -> Path:
        """Files prepared for phase scripts, visible as /run/osbake/stage in the image."""
        return self.workdir / "stage"

    def output_path(self, suffix: str) -> Path:
        """A partial output file; it gets its final name when the whole build succeeded."""
        return self.partial_for(self.outdir / f"{self.plan.image}{suffix}")

    def partial_for(self, final: Path) -> Path:
        """The partial name of `final`: this build's own, so two builds never share one."""
        assert self.output_token, "the output folder is not claimed"
        partial = self.outdir / partial_name(final.name, self.output_token)
        self.partials[partial] = final
        return partial

    @cached_property
    def rootfs_tar(self) -> Path:
        """An uncompressed tarball of the tree, made once and shared by the outputs."""
        path = self.workdir / "rootfs.tar"
        make_rootfs_tar(self, path)
        return path


TAR_EXCLUDES = ("./dev/*", "./proc/*", "./sys/*", "./run/*", "./tmp/*")


def make_rootfs_tar(ctx: Context, path: Path) -> None:
    argv = [
        "tar",
        "--create",
        f"--file={path}",
        f"--directory={ctx.tree}",
        "--sort=name",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
        "--one-file-system",
        "--format=posix",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
    ]
    # No file is newer than the build's epoch: files the build made get that time.
    argv += [f"--mtime=@{ctx.epoch}", "--clamp-mtime"]
    argv += [f"--exclude={pattern}" for pattern in TAR_EXCLUDES]
    argv.append(".")
    runner.run(argv, events=ctx.events)
