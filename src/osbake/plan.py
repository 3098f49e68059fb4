"""The plan: a recipe, variant and arch resolved into steps with content keys.

Each step's key is a sha256 over everything that can change its result: its
parent's key, the recipe fields it uses, the contents of the element files it
runs, the package set, the mirror state and osbake's own code. Equal keys mean
equal results, which is what the step cache relies on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import osbake
from osbake.disk.layout import DiskPlan, plan_disk
from osbake.distros import Distro, check_distro, distro_element, get_distro
from osbake.elements import Catalog, Element, Phase, Request, SearchPath, resolve
from osbake.elements.model import hash_paths
from osbake.elements.options import OptionValues, resolve_options
from osbake.errors import RecipeError
from osbake.outputs import check_output_options, needs_disk
from osbake.recipe import Arch, OutputFormat, Recipe, locate, resolve_path, select_variant


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
            return f"{disk['table']}: {parts}"
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
    disk = plan_disk(recipe, str(chosen_arch), elements)
    _check_boot(recipe, disk)
    base_packages, recipe_packages = _packages(recipe, elements, distro, disk)
    environment = _environment(recipe, chosen_arch, elements, distro)
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
    base: Recipe, *, search: SearchPath | None = None
) -> list[tuple[str | None, Arch]]:
    """Check every variant x arch as far as possible without the network."""
    targets: list[tuple[str | None, Arch]] = []
    # Variants share the recipe's folders, so one catalog (elements load once) serves all.
    catalog = Catalog(search or SearchPath.for_recipe(base.source_dirs))
    for variant in [None, *base.variants]:
        recipe = select_variant(base, variant)
        check_distro(recipe)
        elements = resolve(catalog, _requests(recipe))
        options = resolve_options(recipe, elements)
        for arch in recipe.arch:
            distro = get_distro(recipe, arch, options.get(distro_element(recipe.distro), {}))
            distro.kernel_packages()
            _check_boot(recipe, plan_disk(recipe, str(arch), elements))
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
        packages += distro.filesystem_packages([str(p.fs) for p in disk.partitions if p.fs])
    base = list(dict.fromkeys(packages))
    own = [p for p in dict.fromkeys(recipe.packages) if p not in base]
    return base, own


def _environment(
    recipe: Recipe, arch: Arch, elements: list[Element], distro: Distro
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
        **distro.script_environment(),
    }
    for element in elements:
        env.update(element.spec.environment)
    return env


@cache
def code_digest() -> str:
    """A digest of osbake's own code: a new osbake never reuses an old one's results."""
    package = Path(osbake.__file__).parent
    files = [p for p in sorted(package.rglob("*.py")) if "builtin" not in p.parts]
    return f"{osbake.__version__}+{hash_paths(files, package)[:16]}"


def _key(name: str, parent: str | None, inputs: dict[str, Any]) -> str:
    text = json.dumps(
        {"step": name, "parent": parent, "osbake": code_digest(), "inputs": inputs},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _phase_inputs(plan: Plan, phase: Phase) -> tuple[dict[str, Any], tuple[str, ...]]:
    scripts = sorted(
        (s for e in plan.elements for s in e.scripts(phase)), key=lambda s: s.sort_key()
    )
    users = sorted({s.element for s in scripts})
    by_name = {e.name: e for e in plan.elements}
    inputs: dict[str, Any] = {
        "phase": str(phase),
        "environment": plan.environment,
        "scripts": {name: by_name[name].content_hash(str(phase)) for name in users},
        "options": {name: plan.options.get(name, {}) for name in users},
    }
    if phase == Phase.INSTALL:
        inputs["static"] = {
            e.name: e.content_hash("static") for e in plan.elements if e.static_dir is not None
        }
    if "files" in users:
        inputs["files"] = _files_digest(plan.recipe)
    if "run" in users:
        inputs["run"] = plan.recipe.run
    return inputs, tuple(s.name for s in scripts)


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


def _steps(plan: Plan) -> list[Step]:
    """The build, in order: the story every build follows."""
    steps: list[Step] = []
    parent: str | None = None

    def add(name: str, kind: StepKind, inputs: dict[str, Any], **extra: Any) -> None:
        nonlocal parent
        key = _key(name, parent, inputs)
        steps.append(Step(name, kind, key, inputs, **extra))
        parent = key

    recipe = plan.recipe
    add(
        "bootstrap", StepKind.BOOTSTRAP, {"distro": recipe.distro, **plan.distro.bootstrap_inputs()}
    )
    for phase in (Phase.ROOT, Phase.PRE_INSTALL):
        inputs, scripts = _phase_inputs(plan, phase)
        add(str(phase), StepKind.PHASE, inputs, phase=phase, scripts=scripts)
    package_options = plan.options.get("packages", {})
    add(
        "packages",
        StepKind.PACKAGES,
        {"packages": plan.base_packages, "options": package_options},
    )
    if plan.recipe_packages:
        add(
            "recipe-packages",
            StepKind.PACKAGES,
            {"packages": plan.recipe_packages, "options": package_options},
        )
    for phase in (
        Phase.INSTALL,
        Phase.POST_INSTALL,
        Phase.BLOCK_DEVICE,
        Phase.FINALISE,
        Phase.CLEANUP,
    ):
        inputs, scripts = _phase_inputs(plan, phase)
        if phase == Phase.BLOCK_DEVICE:
            # This step also writes fstab and the bootloader files into the tree.
            inputs["disk"] = _disk_inputs(plan.disk)
            inputs["boot"] = [str(f) for f in recipe.boot]
            inputs["cmdline"] = plan.cmdline
        add(str(phase), StepKind.PHASE, inputs, phase=phase, scripts=scripts)
    add("manifest", StepKind.MANIFEST, {"recipe": recipe.normalised()})
    tree_key = parent
    disk_key = None
    if plan.disk is not None:
        add("disk", StepKind.DISK, {"disk": _disk_inputs(plan.disk)})
        disk_key = parent
    for fmt in recipe.outputs:
        inputs = {"format": str(fmt), "settings": plan.output_settings.get(str(fmt), {})}
        key = _key(f"output:{fmt}", disk_key if needs_disk(fmt) else tree_key, inputs)
        steps.append(Step(f"output:{fmt}", StepKind.OUTPUT, key, inputs, output=fmt))
    return steps


def _disk_inputs(disk: DiskPlan | None) -> dict[str, Any] | None:
    return dataclasses.asdict(disk) if disk is not None else None
