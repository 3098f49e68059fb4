"""The plan: a recipe, variant and arch resolved into steps with content keys.

Each step's key is a sha256 over everything that can change its result: its
parent's key, the inputs its actions declare (osbake.steps: the recipe fields it
uses, the contents of the element files it runs, the package set, the mirror
state) and the code of the modules that shape it. Equal keys mean
equal results, which is what the step cache relies on.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import osbake
from osbake import binfmt
from osbake.context import Plan, Step, StepKind
from osbake.disk.layout import DiskPlan, plan_disk
from osbake.distros import Distro, check_distro, distro_element, get_distro
from osbake.elements import Catalog, Element, Request, SearchPath, resolve
from osbake.elements.model import hash_paths
from osbake.elements.options import resolve_options
from osbake.elements.phases import phase_scripts
from osbake.errors import RecipeError
from osbake.outputs import check_output_options, needs_disk, output_class
from osbake.recipe import Arch, Recipe, locate, select_variant
from osbake.steps import (
    DISK_CODE,
    OUTPUT_CODE,
    disk_inputs,
    step_code,
    step_inputs,
    tree_steps,
)

__all__ = ["Plan", "Step", "StepKind", "check_recipe", "resolve_plan"]


def image_name(recipe: Recipe, arch: Arch, base_arches: list[Arch]) -> str:
    """The artifact stem: name[-variant][-arch when the recipe has several arches]."""
    stem = recipe.name
    if recipe.variant:
        stem += f"-{recipe.variant}"
    if len(base_arches) > 1:
        stem += f"-{arch}"
    return stem


def resolve_plan(
    base: Recipe,
    variant: str | None = None,
    arch: str | None = None,
    *,
    search: SearchPath | None = None,
) -> Plan:
    """Resolve (recipe, variant, arch) into a plan of steps with content keys."""
    recipe = select_variant(base, variant)
    check_distro(recipe)
    chosen_arch = _pick_arch(recipe, arch)
    catalog = Catalog(search or SearchPath.for_recipe(recipe.source_dirs))
    elements = resolve(catalog, _requests(recipe))
    options = resolve_options(recipe, elements)
    distro = get_distro(recipe, chosen_arch, options.get(distro_element(recipe.distro), {}))
    disk = plan_disk(recipe, str(chosen_arch), elements, _disk_outputs(recipe))
    _check_boot(recipe, disk)
    _check_live(recipe, elements)
    base_packages, recipe_packages = _packages(recipe, elements, distro, disk)
    environment = _environment(recipe, chosen_arch, elements, distro, disk)
    plan = Plan(
        recipe,
        chosen_arch,
        image_name(recipe, chosen_arch, base.arch),
        elements,
        options,
        base_packages + recipe_packages,
        distro,
        environment,
        disk=disk,
        recipe_packages=recipe_packages,
        cmdline=_cmdline(recipe, elements, chosen_arch),
        output_settings=check_output_options(recipe),
    )
    plan.steps = _steps(plan)
    return plan


def check_recipe(
    base: Recipe, *, search: SearchPath | None = None, host: bool = False
) -> list[tuple[str | None, Arch]]:
    """Check every variant x arch as far as possible without the network (`host`: and
    that this host can build each arch: a foreign one needs binfmt_misc's handler)."""
    targets: list[tuple[str | None, Arch]] = []
    # Variants share the recipe's folders, so one catalog (elements load once) serves all.
    catalog = Catalog(search or SearchPath.for_recipe(base.source_dirs))
    for variant in [None, *base.variants]:
        recipe = select_variant(base, variant)
        check_distro(recipe)
        elements = resolve(catalog, _requests(recipe))
        options = resolve_options(recipe, elements)
        for index, arch in enumerate(recipe.arch):
            if host:
                binfmt.check_runs(arch, location=locate(recipe, ("arch", index)))
            distro = get_distro(recipe, arch, options.get(distro_element(recipe.distro), {}))
            distro.kernel_packages()
            _check_boot(recipe, plan_disk(recipe, str(arch), elements, _disk_outputs(recipe)))
            _check_live(recipe, elements)
            check_output_options(recipe)
            targets.append((variant, arch))
    return targets


def _pick_arch(recipe: Recipe, arch: str | None) -> Arch:
    if arch is None:
        return recipe.arch[0]
    for candidate in recipe.arch:
        if str(candidate) == arch:
            return candidate
    raise RecipeError(
        f"the recipe does not build for '{arch}'",
        location=locate(recipe, ("arch",)),
        hint=f"its arches are: {', '.join(str(a) for a in recipe.arch)}; "
        "add the arch to 'arch:' to build it",
    )


def _requests(recipe: Recipe) -> list[Request]:
    requests = [Request(distro_element(recipe.distro), None, f"distro '{recipe.distro}'")]
    requests += [
        Request(name, locate(recipe, ("elements", i))) for i, name in enumerate(recipe.elements)
    ]
    if recipe.packages:
        requests.append(Request("packages", locate(recipe, ("packages",)), "'packages:'"))
    if recipe.files:
        requests.append(Request("files", locate(recipe, ("files",)), "'files:'"))
    if recipe.run:
        requests.append(Request("run", locate(recipe, ("run",)), "'run:'"))
    if recipe.kernel == "server":
        # The generic kernel, trimmed by the element (docs/baremetal.md).
        requests.append(Request("server-kernel", locate(recipe, ("kernel",)), "'kernel: server'"))
    return requests


def _check_boot(recipe: Recipe, disk: DiskPlan | None) -> None:
    if not recipe.boot:
        return
    if recipe.kernel == "none":
        raise RecipeError(
            "the image boots (boot: ...) but has no kernel (kernel: none)",
            location=locate(recipe, ("kernel",)),
            hint="set kernel: cloud (for VMs) or kernel: generic",
        )
    if disk is None:
        raise RecipeError(
            "the image boots (boot: ...) but has no disk layout",
            location=locate(recipe, ("boot",)),
            hint="add the 'vm' element, or a 'disk:' layout",
        )


# The element that makes the tree a live system, and the output that boots it.
LIVE_ELEMENT = "live"


def _check_live(recipe: Recipe, elements: list[Element]) -> None:
    """A live ISO needs a kernel, firmwares and the live element; a live tree no disk."""
    live = [i for i, o in enumerate(recipe.outputs) if _replaces_disk(str(o))]
    has_element = any(e.name == LIVE_ELEMENT for e in elements)
    if live:
        where = locate(recipe, ("outputs", live[0]))
        fmt = recipe.outputs[live[0]]
        if recipe.kernel == "none":
            raise RecipeError(
                f"the output '{fmt}' is a live system, but the image has no kernel (kernel: none)",
                location=locate(recipe, ("kernel",)),
                hint="set kernel: cloud (for VMs) or kernel: generic (for real machines)",
            )
        if not recipe.boot:
            raise RecipeError(
                f"the output '{fmt}' boots, but the recipe names no firmware to boot with",
                location=where,
                hint="add boot: [bios, uefi] (and uefi-secureboot for Secure Boot)",
            )
        if not has_element:
            raise RecipeError(
                f"the output '{fmt}' is a live system, but the recipe lacks the "
                f"'{LIVE_ELEMENT}' element (live-boot in the initramfs, boot=live)",
                location=where,
                hint=f"add '{LIVE_ELEMENT}' to elements (e.g. in a variant that builds the ISO)",
            )
    disk_outputs = [i for i, o in enumerate(recipe.outputs) if needs_disk(o)]
    if has_element and disk_outputs:
        raise RecipeError(
            f"the '{LIVE_ELEMENT}' element makes a live system (boot=live), which does not "
            f"boot from a disk, but the recipe asks for the disk image "
            f"'{recipe.outputs[disk_outputs[0]]}'",
            location=locate(recipe, ("outputs", disk_outputs[0])),
            hint="build the ISO in a variant of its own: "
            f"{{elements: [{LIVE_ELEMENT}], outputs: [iso]}}",
        )


def _replaces_disk(fmt: str) -> bool:
    cls = output_class(fmt)
    return cls is not None and cls.replaces_disk


def _assembles_disk(plan: Plan) -> bool:
    """A disk is made when there is a layout, unless the image boots from a live ISO
    and no output is made from the disk."""
    if plan.disk is None:
        return False
    outputs = [str(o) for o in plan.recipe.outputs]
    return any(needs_disk(o) for o in outputs) or not any(_replaces_disk(o) for o in outputs)


def _disk_outputs(recipe: Recipe) -> list[str]:
    return [str(o) for o in recipe.outputs if needs_disk(o)]


def _cmdline(recipe: Recipe, elements: list[Element], arch: Arch) -> str:
    words: list[str] = []
    for element in elements:
        words += [w for w in element.spec.cmdline_for(arch) if w not in words]
    if recipe.cmdline:
        words += recipe.cmdline.split()
    return " ".join(words)


def _packages(
    recipe: Recipe, elements: list[Element], distro: Distro, disk: DiskPlan | None
) -> tuple[list[str], list[str]]:
    """Elements', kernel, bootloader and file system packages; then the recipe's own
    (each once)."""
    packages: list[str] = []
    for element in elements:
        packages += element.spec.packages
    packages += distro.kernel_packages()
    packages += distro.bootloader_packages(list(recipe.boot))
    if disk is not None:
        packages += distro.filesystem_packages([str(p.fs) for p in disk.filesystems if p.fs])
        if disk.volume_groups:
            packages += distro.filesystem_packages(["lvm"])
        if disk.encrypted:
            packages += distro.filesystem_packages(["luks"])
    base = list(dict.fromkeys(packages))
    own = [p for p in dict.fromkeys(recipe.packages) if p not in base]
    return base, own


def _environment(
    recipe: Recipe, arch: Arch, elements: list[Element], distro: Distro, disk: DiskPlan | None
) -> dict[str, str]:
    """What every phase script sees (besides its own element's options)."""
    env = {
        "OSBAKE_IMAGE_NAME": recipe.name,
        "OSBAKE_VARIANT": recipe.variant or "",
        **arch.info.environment(),
        "OSBAKE_DISTRO": recipe.distro,
        "OSBAKE_RELEASE": recipe.release,
        "OSBAKE_ELEMENTS": " ".join(e.name for e in elements),
        "OSBAKE_KERNEL": recipe.kernel,
        "OSBAKE_ROOT_FS": _root_filesystems(disk),
        **distro.script_environment(),
    }
    for element in elements:
        env.update(element.spec.environment)
    return env


def _root_filesystems(disk: DiskPlan | None) -> str:
    """The file systems of / and /usr, which the initramfs mounts ("" without a disk)."""
    if disk is None:
        return ""
    found = [str(p.fs) for p in disk.filesystems if p.mount in ("/", "/usr") and p.fs]
    return " ".join(dict.fromkeys(found))


# Where osbake's code is (the tests point it at a copy).
CODE_ROOT = Path(osbake.__file__).parent


def code_digest(modules: tuple[str, ...]) -> str:
    """A digest of the code of these modules (a package: all of its modules).

    A step's key covers the code that shapes that step only: a change to the web
    console leaves a cached bootstrap cached; a change to the bootloader does not.
    """
    return _digest(modules, CODE_ROOT)


@cache
def _digest(modules: tuple[str, ...], root: Path) -> str:
    files: list[Path] = []
    for module in modules:
        relative = Path(*module.split(".")[1:])
        folder = root / relative
        if folder.is_dir():
            files += [p for p in folder.rglob("*.py") if "builtin" not in p.parts]
        else:
            files.append(folder.with_suffix(".py"))
    return f"{osbake.__version__}+{hash_paths(sorted(set(files)), root)[:16]}"


def _key(name: str, parent: str | None, inputs: dict[str, Any], code: tuple[str, ...]) -> str:
    text = json.dumps(
        {"step": name, "parent": parent, "osbake": code_digest(code), "inputs": inputs},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _steps(plan: Plan) -> list[Step]:
    """The build, in order: the tree's steps (osbake.steps), the disk, the outputs."""
    steps: list[Step] = []
    parent: str | None = None
    for spec in tree_steps(plan):
        inputs = step_inputs(plan, spec)
        code = step_code(plan, spec.actions)
        key = _key(spec.name, parent, inputs, code)
        scripts = (
            tuple(s.name for s in phase_scripts(plan.elements, spec.phase)) if spec.phase else ()
        )
        actions = tuple(a.name for a in spec.actions)
        steps.append(
            Step(spec.name, spec.kind, key, inputs, spec.phase, scripts, actions=actions, code=code)
        )
        parent = key
    tree_key = parent
    disk_key = None
    if _assembles_disk(plan):
        inputs = {"disk": disk_inputs(plan.disk)}
        code = step_code(plan, (), *DISK_CODE)
        disk_key = _key("disk", parent, inputs, code)
        steps.append(Step("disk", StepKind.DISK, disk_key, inputs, code=code))
    for fmt in plan.recipe.outputs:
        inputs = {"format": str(fmt), "settings": plan.output_settings.get(str(fmt), {})}
        cls = output_class(fmt)
        code = step_code(plan, (), *OUTPUT_CODE, *(cls.code if cls else ()))
        key = _key(f"output:{fmt}", disk_key if needs_disk(fmt) else tree_key, inputs, code)
        steps.append(Step(f"output:{fmt}", StepKind.OUTPUT, key, inputs, output=fmt, code=code))
    return steps
