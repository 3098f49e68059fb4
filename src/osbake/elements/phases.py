"""Run the scripts of one phase, in order of numeric prefix, then element, then name.

In-image phases run each script inside the tree through the sandbox; host-side
phases (root, block-device, cleanup) run it on the build host with the tree's
path in OSBAKE_TARGET_ROOT. The environment is documented in docs/elements.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from osbake import run as runner
from osbake import sandbox
from osbake.elements.model import Element, Phase, Script
from osbake.elements.options import option_environment
from osbake.errors import CommandError

if TYPE_CHECKING:
    from osbake.context import Context

IMAGE_ELEMENTS_DIR = f"{sandbox.RUN_DIR}/elements"
IMAGE_STAGE_DIR = f"{sandbox.RUN_DIR}/stage"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def phase_scripts(elements: list[Element], phase: Phase) -> list[Script]:
    scripts = [s for e in elements for s in e.scripts(phase)]
    return sorted(scripts, key=lambda s: s.sort_key())


def run_phase(ctx: Context, phase: Phase) -> None:
    elements = {e.name: e for e in ctx.plan.elements}
    scripts = phase_scripts(ctx.plan.elements, phase)
    for number, script in enumerate(scripts):
        ctx.events.progress(str(phase), number, len(scripts))
        try:
            _run_script(ctx, phase, script, elements)
        except CommandError as exc:
            raise CommandError(
                exc.argv, exc.returncode, exc.tail, hint=exc.hint, what=f"the script {script.name}"
            ) from None
    if scripts:
        ctx.events.progress(str(phase), len(scripts), len(scripts))


def _run_script(ctx: Context, phase: Phase, script: Script, elements: dict[str, Element]) -> None:
    element = elements[script.element]
    env = {
        **ctx.plan.environment,
        **option_environment(ctx.options.get(element.name, {}), element),
        **ctx.distro.tool_environment(ctx.options),
        # What the script makes is dated at most the build's epoch by tools that honour it.
        "SOURCE_DATE_EPOCH": str(ctx.epoch),
        "OSBAKE_PHASE": str(phase),
        "OSBAKE_ELEMENT": element.name,
    }
    hint = f"the script is {script.path}; run with -v to see its output"
    ctx.events.log(f"running {script.name}")
    if phase.in_image:
        env |= {
            "OSBAKE_TARGET_ROOT": "/",
            "OSBAKE_ELEMENT_DIR": f"{IMAGE_ELEMENTS_DIR}/{element.name}",
            "OSBAKE_STAGE_DIR": IMAGE_STAGE_DIR,
        }
        binds = [sandbox.Bind(e.path, f"{IMAGE_ELEMENTS_DIR}/{e.name}") for e in ctx.plan.elements]
        binds.append(sandbox.Bind(ctx.stage, IMAGE_STAGE_DIR))
        target = f"{IMAGE_ELEMENTS_DIR}/{element.name}/{phase}/{script.path.name}"
        # The shared package cache is there while packages may be installed; not in
        # finalise, whose clean-up (apt-get clean) must only clean the image.
        if phase != Phase.FINALISE:
            ctx.packages.mkdir(parents=True, exist_ok=True)
            binds.append(sandbox.Bind(ctx.packages, ctx.distro.package_cache_dir, writable=True))
        sandbox.run_in_tree(ctx.tree, [target], env=env, binds=binds, events=ctx.events, hint=hint)
    else:
        env |= {
            "OSBAKE_TARGET_ROOT": str(ctx.tree),
            "OSBAKE_ELEMENT_DIR": str(element.path),
            "OSBAKE_STAGE_DIR": str(ctx.stage),
            "OSBAKE_WORK_DIR": str(ctx.workdir),
            "PATH": HOST_PATH,
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
        }
        runner.run(
            [str(script.path)],
            env=env,
            clear_env=True,
            events=ctx.events,
            cwd=ctx.workdir,
            hint=hint,
        )
