"""The built-in steps: each declared once, with what it reads and what it does.

A step of the plan is a list of actions. Each action declares the plan's values it
reads (its inputs), the modules whose code shapes what it makes, the results it
produces besides the tree, and the function that does it. The plan (osbake.plan)
hashes the inputs and the code of a step's actions into the step's key; the
step runner (osbake.build) runs the same actions and keeps their results with the
step's cache entry. A fact that shapes a step is therefore in its key by
construction, not copied there by hand.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import osbake
from osbake import sandbox, sbom
from osbake.context import Context, Plan, Step, StepKind
from osbake.disk import bootloader
from osbake.disk.assemble import AssembledDisk, assemble
from osbake.disk.layout import DiskPlan
from osbake.elements import Phase
from osbake.elements.model import hash_paths
from osbake.elements.phases import phase_scripts, run_phase
from osbake.manifest import (
    IN_IMAGE_DIR,
    ArtifactEntry,
    ElementEntry,
    Manifest,
    MirrorEntry,
    PackageEntry,
    StepEntry,
    file_sha256,
    recipe_digest,
)
from osbake.outputs import get_output
from osbake.recipe import Recipe, resolve_path


@dataclass
class Results:
    """What the steps make besides the tree; the step runner keeps and restores it."""

    manifest: Manifest | None = None
    boot: bootloader.BootSetup | None = None
    disk: AssembledDisk | None = None
    disk_description: dict[str, Any] | None = None
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    steps: list[StepEntry] = field(default_factory=list)
    sbom: dict[str, Any] | None = None  # the SPDX document (osbake.sbom)


# -- results kept with a step's cache entry ------------------------------------------------


@dataclass(frozen=True)
class Kept:
    """How one result is saved beside a step's layer and read back."""

    save: Callable[[Any, Path], Any]  # (value, folder) -> JSON for the entry's meta
    load: Callable[[Path, Any], Any]  # (folder, meta) -> value


def _save_manifest(manifest: Manifest, folder: Path) -> bool:
    (folder / "manifest.json").write_text(manifest.to_json())
    return True


def _load_manifest(folder: Path, meta: Any) -> Manifest:
    return Manifest.model_validate_json((folder / "manifest.json").read_text())


def _save_boot(boot: bootloader.BootSetup, folder: Path) -> dict[str, Any]:
    for path in (boot.core_img, boot.boot_img):
        if path is not None:
            shutil.copyfile(path, folder / path.name)
    return {
        "core_img": boot.core_img is not None,
        "firmware": boot.firmware,
        "cmdline": boot.cmdline,
        "efi_files": boot.efi_files,
    }


def _load_boot(folder: Path, meta: Any) -> bootloader.BootSetup:
    return bootloader.BootSetup(
        core_img=folder / "core.img" if meta["core_img"] else None,
        boot_img=folder / "boot.img" if meta["core_img"] else None,
        firmware=meta["firmware"],
        cmdline=meta["cmdline"],
        efi_files=meta["efi_files"],
    )


def _save_sbom(document: dict[str, Any], folder: Path) -> bool:
    (folder / "sbom.spdx.json").write_text(sbom.to_json(document))
    return True


def _load_sbom(folder: Path, meta: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / "sbom.spdx.json").read_text())
    return loaded


KEPT: dict[str, Kept] = {
    "manifest": Kept(_save_manifest, _load_manifest),
    "sbom": Kept(_save_sbom, _load_sbom),
    "boot": Kept(_save_boot, _load_boot),
}


# -- the actions ---------------------------------------------------------------------------

Inputs = Callable[[Plan, "TreeStep"], dict[str, Any]]
Run = Callable[[Context, Step, Results], None]

# Code every step's result depends on: how a tree is entered and commands are run.
BASE_CODE = ("osbake.context", "osbake.steps", "osbake.sandbox", "osbake.run")


@dataclass(frozen=True)
class Action:
    name: str
    run: Run
    inputs: Inputs
    code: tuple[str, ...] = ()
    distro: bool = False  # shaped by the distro plugin's code too
    produces: tuple[str, ...] = ()  # names of Results fields, saved with the entry


@dataclass(frozen=True)
class TreeStep:
    """A step of the tree, as the plan lists it: the actions it runs, in order."""

    name: str
    kind: StepKind
    actions: tuple[Action, ...]
    phase: Phase | None = None
    packages: tuple[str, ...] = ()


def _no_inputs(plan: Plan, spec: TreeStep) -> dict[str, Any]:
    return {}


def bootstrap(ctx: Context, step: Step, results: Results) -> None:
    ctx.distro.bootstrap(ctx)


def _bootstrap_inputs(plan: Plan, spec: TreeStep) -> dict[str, Any]:
    return {"distro": plan.recipe.distro, **plan.distro.bootstrap_inputs()}


def install_packages(ctx: Context, step: Step, results: Results) -> None:
    ctx.distro.install_packages(ctx, list(step.inputs["packages"]))


def _packages_inputs(plan: Plan, spec: TreeStep) -> dict[str, Any]:
    return {"packages": list(spec.packages), "options": plan.options.get("packages", {})}


def run_scripts(ctx: Context, step: Step, results: Results) -> None:
    assert step.phase is not None
    run_phase(ctx, step.phase)


def _scripts_inputs(plan: Plan, spec: TreeStep) -> dict[str, Any]:
    assert spec.phase is not None
    users = sorted({s.element for s in phase_scripts(plan.elements, spec.phase)})
    by_name = {e.name: e for e in plan.elements}
    inputs: dict[str, Any] = {
        "phase": str(spec.phase),
        "environment": plan.environment,
        "scripts": {name: by_name[name].content_hash(str(spec.phase)) for name in users},
        "options": {name: plan.options.get(name, {}) for name in users},
    }
    if "files" in users:
        inputs["files"] = _files_digest(plan.recipe)
    if "run" in users:
        inputs["run"] = plan.recipe.run
    return inputs


def _files_digest(recipe: Recipe) -> list[dict[str, str | None]]:
    entries = []
    for index, spec in enumerate(recipe.files):
        src = resolve_path(recipe, ("files", index, "src"), spec.src)
        entries.append(
            {
                "dest": spec.dest,
                "mode": spec.mode,
                "owner": spec.owner,
                "group": spec.group,
                "sha256": hash_paths([src], src.parent),
            }
        )
    return entries


def copy_static_files(ctx: Context, step: Step, results: Results) -> None:
    """Copy each element's static/ tree into the image, dependencies first."""
    for element in ctx.plan.elements:
        if element.static_dir is None:
            continue
        sandbox.run_in_tree(
            ctx.tree,
            [
                "sh",
                "-c",
                "tar -C /run/osbake/static -cf - . | "
                "tar -C / -xf - --keep-directory-symlink --no-same-owner",
            ],
            binds=[sandbox.Bind(element.static_dir, "/run/osbake/static")],
            events=ctx.events,
        )


def _static_inputs(plan: Plan, spec: TreeStep) -> dict[str, Any]:
    return {
        "static": {
            e.name: e.content_hash("static") for e in plan.elements if e.static_dir is not None
        }
    }


def prepare_boot(ctx: Context, step: Step, results: Results) -> None:
    # Every package is in: the initramfs is made now, once. From here on the image
    # behaves as an installed system (a package installed later remakes it), and a
    # change to a later step (a run: line) does not remake it.
    ctx.distro.prepare_boot(ctx)


def install_bootloader(ctx: Context, step: Step, results: Results) -> None:
    # Also writes fstab and the bootloader's files into the tree.
    if ctx.plan.disk is not None:
        results.boot = bootloader.prepare(
            ctx, ctx.plan.disk, list(ctx.recipe.boot), ctx.plan.cmdline
        )


def _bootloader_inputs(plan: Plan, spec: TreeStep) -> dict[str, Any]:
    return {
        "disk": disk_inputs(plan.disk),
        "boot": [str(f) for f in plan.recipe.boot],
        "cmdline": plan.cmdline,
    }


def finish(ctx: Context, step: Step, results: Results) -> None:
    ctx.distro.finish(ctx)


def _manifest_inputs(plan: Plan, spec: TreeStep) -> dict[str, Any]:
    return {"recipe": plan.recipe.normalised()}


def write_manifest(ctx: Context, step: Step, results: Results) -> None:
    plan = ctx.plan
    normalised = plan.recipe.normalised()
    mirror = [
        MirrorEntry(source=source, sha256=state["sha256"], date=state.get("date", ""))
        for source, state in plan.distro.mirror_state().items()
    ]
    results.manifest = Manifest(
        osbake_version=osbake.__version__,
        image=plan.image,
        name=plan.recipe.name,
        variant=plan.variant,
        arch=str(plan.arch),
        distro=plan.recipe.distro,
        release=plan.recipe.release,
        recipe=normalised,
        recipe_sha256=recipe_digest(normalised),
        recipe_file=str(plan.recipe.source.resolve()) if plan.recipe.source else None,
        elements=[
            ElementEntry(name=e.name, sha256=e.content_hash(), origin=e.origin)
            for e in plan.elements
        ],
        packages=[PackageEntry(**vars(p)) for p in ctx.distro.installed_packages(ctx.tree)],
        sources=plan.distro.describe_sources(),
        mirror=mirror,
        steps=[StepEntry(name=s.name, key=s.key) for s in plan.steps],
        boot=[str(f) for f in plan.recipe.boot],
        cmdline=plan.cmdline,
        disk=_planned_disk(plan),
        kernel=ctx.distro.kernel_footprint(ctx.tree),
    )
    installed = ctx.distro.bill_of_materials(ctx.tree, results.manifest, ctx.packages)
    results.sbom = (
        None
        if installed is None
        else sbom.document(results.manifest, installed, created=sbom.created(mirror))
    )
    staged = ctx.stage / "osbake"
    staged.mkdir(parents=True, exist_ok=True)
    (staged / "manifest.json").write_text(results.manifest.in_image().to_json())
    (staged / "recipe.yaml").write_text(yaml.safe_dump(normalised, sort_keys=False))
    in_image = ["/run/osbake/in/manifest.json", "/run/osbake/in/recipe.yaml"]
    if results.sbom is not None:
        (staged / "sbom.spdx.json").write_text(sbom.to_json(results.sbom))
        in_image.append("/run/osbake/in/sbom.spdx.json")
    sandbox.run_in_tree(
        ctx.tree,
        [
            "sh",
            "-c",
            f"mkdir -p {IN_IMAGE_DIR} && install -m 0644 {' '.join(in_image)} {IN_IMAGE_DIR}/",
        ],
        binds=[sandbox.Bind(staged, "/run/osbake/in")],
        events=ctx.events,
    )


def _planned_disk(plan: Plan) -> dict[str, Any] | None:
    """The layout as known before assembly: identifiers, not yet sizes and offsets."""
    if plan.disk is None:
        return None
    return {
        "table": str(plan.disk.table),
        "disk_uuid": plan.disk.disk_uuid,
        "partitions": [
            {
                "number": p.number,
                "name": p.name,
                "type": str(p.type),
                "size": p.size,
                "fs": str(p.fs) if p.fs else None,
                "mount": p.mount,
                "label": p.label,
                "part_uuid": p.part_uuid,
                "fs_uuid": p.fs_uuid,
            }
            for p in plan.disk.partitions
        ],
        **(
            {
                "volume_groups": [
                    {
                        "name": g.name,
                        "pv": g.pv,
                        "volumes": [
                            {
                                "name": v.name,
                                "size": v.size,
                                "fs": str(v.fs) if v.fs else None,
                                "mount": v.mount,
                                "fs_uuid": v.fs_uuid,
                            }
                            for v in g.volumes
                        ],
                    }
                    for g in plan.disk.volume_groups
                ]
            }
            if plan.disk.volume_groups
            else {}
        ),
    }


BOOTSTRAP = Action("bootstrap", bootstrap, _bootstrap_inputs, distro=True)
PACKAGES = Action("packages", install_packages, _packages_inputs, distro=True)
SCRIPTS = Action(
    "scripts", run_scripts, _scripts_inputs, ("osbake.elements.phases", "osbake.elements.options")
)
STATIC_FILES = Action("static-files", copy_static_files, _static_inputs)
INITRAMFS = Action("initramfs", prepare_boot, _no_inputs, distro=True)
BOOTLOADER = Action(
    "bootloader",
    install_bootloader,
    _bootloader_inputs,
    ("osbake.disk", "osbake.distros.kernels"),
    distro=True,  # the distro's branding: its EFI folder and menu title
    produces=("boot",),
)
DISTRO_FINISH = Action("distro-finish", finish, _no_inputs, distro=True)
MANIFEST = Action(
    "manifest",
    write_manifest,
    _manifest_inputs,
    ("osbake.manifest", "osbake.sbom", "osbake.distros.kernels"),
    distro=True,
    produces=("manifest", "sbom"),
)
ACTIONS = {
    a.name: a
    for a in (
        BOOTSTRAP,
        PACKAGES,
        SCRIPTS,
        STATIC_FILES,
        INITRAMFS,
        BOOTLOADER,
        DISTRO_FINISH,
        MANIFEST,
    )
}
# The code of the steps after the tree.
DISK_CODE = ("osbake.disk",)
OUTPUT_CODE = ("osbake.outputs", "osbake.manifest")


def tree_steps(plan: Plan) -> list[TreeStep]:
    """The tree's steps, in order: the story every build follows."""

    def phase(
        p: Phase, before: tuple[Action, ...] = (), after: tuple[Action, ...] = ()
    ) -> TreeStep:
        return TreeStep(str(p), StepKind.PHASE, (*before, SCRIPTS, *after), phase=p)

    steps = [
        TreeStep("bootstrap", StepKind.BOOTSTRAP, (BOOTSTRAP,)),
        phase(Phase.ROOT),
        phase(Phase.PRE_INSTALL),
        TreeStep("packages", StepKind.PACKAGES, (PACKAGES,), packages=tuple(plan.base_packages)),
    ]
    if plan.recipe_packages:
        steps.append(
            TreeStep(
                "recipe-packages",
                StepKind.PACKAGES,
                (PACKAGES,),
                packages=tuple(plan.recipe_packages),
            )
        )
    steps += [
        phase(Phase.INSTALL, before=(STATIC_FILES,), after=(INITRAMFS,)),
        phase(Phase.POST_INSTALL),
        phase(Phase.BLOCK_DEVICE, after=(BOOTLOADER,)),
        phase(Phase.FINALISE, after=(DISTRO_FINISH,)),
        phase(Phase.CLEANUP),
        TreeStep("manifest", StepKind.MANIFEST, (MANIFEST,)),
    ]
    return steps


def step_inputs(plan: Plan, spec: TreeStep) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for action in spec.actions:
        inputs.update(action.inputs(plan, spec))
    return inputs


def step_code(plan: Plan, actions: tuple[Action, ...], *extra: str) -> tuple[str, ...]:
    """The modules whose code shapes a step: the base, its actions' and the distro's."""
    modules = [*BASE_CODE, *extra]
    for action in actions:
        modules += action.code
        if action.distro:
            modules += plan.distro.modules
    return tuple(sorted(set(modules)))


def run_actions(ctx: Context, step: Step, results: Results) -> None:
    for name in step.actions:
        ACTIONS[name].run(ctx, step, results)


def produces(step: Step) -> tuple[str, ...]:
    return tuple(name for a in step.actions for name in ACTIONS[a].produces)


def disk_inputs(disk: DiskPlan | None) -> dict[str, Any] | None:
    return dataclasses.asdict(disk) if disk is not None else None


# -- after the tree: the disk and the outputs ----------------------------------------------


def make_disk(ctx: Context, results: Results, image: Path) -> None:
    assert ctx.plan.disk is not None
    setup = results.boot or bootloader.BootSetup()
    results.disk = assemble(ctx, ctx.plan.disk, setup, image)
    results.disk_description = results.disk.describe(ctx.plan.disk)


def make_output(ctx: Context, step: Step, results: Results) -> Path:
    """Write one output (to its partial name in the output folder); return that path."""
    assert step.output is not None
    plugin = get_output(step.output, ctx.plan.output_settings.get(str(step.output)))
    path = plugin.write(ctx)
    results.artifacts.append(
        ArtifactEntry(
            file=ctx.partials[path].name,
            format=str(step.output),
            size=path.stat().st_size,
            sha256=file_sha256(path),
        )
    )
    return path
