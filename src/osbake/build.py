"""The build: a plan's steps run in order on a work tree, then the outputs.

`build()` is what the CLI and the console's workers call. It reads as the story
of a build: bootstrap, phases, packages, more phases, manifest, disk, outputs.
The steps and their actions are declared in osbake.steps; the `StepRunner` here
runs them, reuses what the step cache has, and keeps their `Results`.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from osbake import binfmt, package_pool, sandbox, sbom
from osbake import run as runner
from osbake.cache import Entry, Store, Writer, link_or_copy
from osbake.context import Context, Plan, Step, StepKind
from osbake.disk.assemble import AssembledDisk
from osbake.errors import Interrupted, OsbakeError, RecipeError, StepError
from osbake.events import Events
from osbake.formats import FormatError
from osbake.manifest import (
    ArtifactEntry,
    BuildInfo,
    Manifest,
    StepEntry,
    file_sha256,
    manifest_path,
    sbom_path,
)
from osbake.outputs import get_output, needs_disk
from osbake.plan import resolve_plan
from osbake.recipe import Recipe, locate
from osbake.recipe.files import copy_source
from osbake.recipe.loader import source_folder
from osbake.settings import Settings
from osbake.steps import KEPT, Results, make_disk, make_output, produces, run_actions
from osbake.workspace import claim_outputs, workspace


@dataclass
class BuildResult:
    image: str
    artifacts: list[Path]
    manifest_path: Path
    manifest: Manifest


def stage_inputs(ctx: Context) -> None:
    """Prepare the recipe's files and run commands for the `files` and `run` elements."""
    recipe = ctx.recipe
    stage = ctx.stage
    (stage / "files" / "data").mkdir(parents=True, exist_ok=True)
    lines = []
    for index, spec in enumerate(recipe.files):
        where = ("files", index, "src")
        # Copied without following any symlink (checked again here: the folder may have
        # changed since the recipe was loaded).
        try:
            copy_source(
                source_folder(recipe, where), spec.src, stage / "files" / "data" / str(index)
            )
        except FormatError as exc:
            raise RecipeError(exc.message, location=locate(recipe, where), hint=exc.hint) from None
        lines.append(f"{index}\t{spec.mode or '-'}\t{spec.owner}\t{spec.group}\t{spec.dest}")
    (stage / "files" / "list").write_text("".join(f"{line}\n" for line in lines))
    script = "#!/bin/sh\nset -ex\n" + "".join(f"{command}\n" for command in recipe.run)
    (stage / "run.sh").write_text(script)
    (stage / "run.sh").chmod(0o755)
    (stage / "recipe.json").write_text(json.dumps(recipe.normalised(), indent=2))


# -- the build ---------------------------------------------------------------------------


def build(
    recipe: Recipe,
    *,
    outdir: Path,
    variant: str | None = None,
    arch: str | None = None,
    settings: Settings | None = None,
    events: Events | None = None,
    use_cache: bool = True,
) -> BuildResult:
    """Build one image (recipe x variant x arch) into `outdir`."""
    events = events or Events()
    settings = settings or Settings.from_environment()
    plan = resolve_plan(recipe, variant, arch)
    return execute(plan, outdir=outdir, settings=settings, events=events, use_cache=use_cache)


def execute(
    plan: Plan, *, outdir: Path, settings: Settings, events: Events, use_cache: bool = True
) -> BuildResult:
    events.begin(
        plan.image, [{"name": s.name, "key": s.key, "describe": s.describe()} for s in plan.steps]
    )
    settings.check_writable()
    outdir.mkdir(parents=True, exist_ok=True)
    with workspace(settings, plan.image) as workdir, claim_outputs(outdir) as token:
        ctx = Context(plan, settings, events, workdir, outdir)
        ctx.output_token = token
        # Without the cache, steps still go through a store: a private one, thrown away.
        store = Store(settings.store_dir if use_cache else workdir / "store")
        runner = StepRunner(ctx, store)
        try:
            stage_inputs(ctx)
            package_pool.check_out(
                settings.package_cache(plan.distro.name), ctx.packages, str(plan.arch)
            )
            runner.run()
            runner.current = "publish artifacts"
            result = _finish(ctx, runner.results)
        except OsbakeError as exc:
            _discard(ctx)
            error = exc if isinstance(exc, StepError) else StepError(runner.current, exc)
            events.finish(False, error=error.message, step=runner.current)
            raise error from None
        except KeyboardInterrupt:
            _ignore_interrupts()
            _discard(ctx)
            events.finish(False, error="interrupted", step=runner.current)
            raise Interrupted(
                f"the build was interrupted during step '{runner.current}'; nothing was left behind"
            ) from None
        except BaseException:
            _discard(ctx)
            raise
        finally:
            runner.close()
    if use_cache:
        # Keep the cache within its budget (least recently used entries go first).
        store.gc()
    events.finish(True, artifacts=[str(p) for p in result.artifacts])
    return result


class StepRunner:
    """Runs a plan's steps, reusing every result the step cache has for their keys.

    The tree steps resume after the last one whose key is in the cache: its layers
    are stacked with overlayfs and each new step writes its changes into a new
    layer that becomes a cache entry. The disk and the outputs are cache entries
    too, so an unchanged build only links its artifacts.
    """

    def __init__(self, ctx: Context, store: Store) -> None:
        self.ctx = ctx
        self.store = store
        self.layers: list[Path] = []  # bottom first
        self.current = "setup"
        self.mounted = False
        self.writers: list[Writer] = []
        self.results = Results()
        store.reap()

    def run(self) -> None:
        plan = self.ctx.plan
        tree_steps = [s for s in plan.steps if s.kind not in (StepKind.DISK, StepKind.OUTPUT)]
        reusable = self._reusable(tree_steps)
        if len(reusable) < len(tree_steps):
            # Steps run the image's programs: a foreign arch needs the host's binfmt_misc.
            binfmt.check_runs(plan.arch, location=locate(plan.recipe, ("arch",)))
        for step in tree_steps[: len(reusable)]:
            self._reuse(step, reusable[step.key])
        for step in tree_steps[len(reusable) :]:
            self._run_tree_step(step)
        for step in plan.steps:
            if step.kind == StepKind.DISK:
                self._run_disk_step(step)
            elif step.kind == StepKind.OUTPUT:
                self._run_output_step(step)

    def close(self) -> None:
        self._unmount()
        for writer in self.writers:
            writer.abort()
        self.store.release()

    # -- the tree -----------------------------------------------------------------------

    def _reusable(self, steps: list[Step]) -> dict[str, Entry]:
        """The longest run of tree steps, from the first, whose results are cached."""
        found: dict[str, Entry] = {}
        entries = []
        for step in steps:
            entry = self.store.lookup(step.key)
            if entry is None:
                break
            entries.append((step, entry))
        everything = len(entries) == len(steps) and self._outputs_cached()
        for step, entry in entries:
            # Held from here on; layers are only read when something is left to do,
            # and then checked.
            if not self.store.use(entry) or (not everything and not self.store.verify(entry)):
                break
            found[step.key] = entry
        return found

    def _outputs_cached(self) -> bool:
        return all(
            self.store.lookup(s.key) is not None
            for s in self.ctx.plan.steps
            if s.kind in (StepKind.DISK, StepKind.OUTPUT)
        )

    def _reuse(self, step: Step, entry: Entry) -> None:
        self._begin(step)
        self.layers.append(entry.layer)
        self._restore(step, entry)
        self._end(step, 0.0, "cached")

    def _run_tree_step(self, step: Step) -> None:
        ctx = self.ctx
        started = self._begin(step)
        writer = self._writer(step)
        if step.kind == StepKind.BOOTSTRAP:
            ctx.tree_dir = writer.layer  # the first layer is the whole tree
        else:
            self._unmount()
            sandbox.mount_overlay(ctx.tree, list(reversed(self.layers)), writer.layer, writer.work)
            self.mounted = True
        try:
            run_actions(ctx, step, self.results)
        finally:
            self._unmount()
            ctx.tree_dir = None
        package_pool.check_in(ctx.settings.package_cache(ctx.distro.name), ctx.packages)
        meta = self._save(step, writer)
        entry = self._commit(writer, meta)
        self.store.use(entry)
        self.layers.append(entry.layer)
        self._end(step, time.monotonic() - started, "done")

    def _mount_tree(self) -> None:
        """The finished tree, read-only (for the disk and the tree outputs)."""
        if not self.mounted:
            sandbox.mount_overlay(self.ctx.tree, list(reversed(self.layers)))
            self.mounted = True

    def _unmount(self) -> None:
        if self.mounted:
            sandbox.unmount(self.ctx.tree)
            self.mounted = False

    # -- what steps keep besides the tree -------------------------------------------------

    def _save(self, step: Step, writer: Writer) -> dict[str, Any]:
        meta: dict[str, Any] = {"step": step.name, "parent": self._parent(step)}
        for name in produces(step):
            value = getattr(self.results, name)
            if value is not None:
                meta[name] = KEPT[name].save(value, writer.extra)
        return meta

    def _restore(self, step: Step, entry: Entry) -> None:
        for name in produces(step):
            if name in entry.meta:
                setattr(self.results, name, KEPT[name].load(entry.extra, entry.meta[name]))

    def _parent(self, step: Step) -> str | None:
        steps = self.ctx.plan.steps
        index = steps.index(step)
        if step.kind == StepKind.OUTPUT:
            from_disk = self.results.disk is not None and needs_disk(step.inputs.get("format", ""))
            wanted = StepKind.DISK if from_disk else StepKind.MANIFEST
            return next((s.key for s in steps if s.kind == wanted), None)
        return steps[index - 1].key if index else None

    # -- the disk and the outputs ---------------------------------------------------------

    def _run_disk_step(self, step: Step) -> None:
        ctx, results = self.ctx, self.results
        started = self._begin(step)
        entry = self.store.lookup(step.key)
        if entry is not None and self.store.use(entry) and self.store.verify(entry):
            description = entry.meta["disk"]
            results.disk = AssembledDisk(entry.path / "disk.raw", int(description["size"]), [])
            results.disk_description = description
            ctx.disk = results.disk
            self._describe_disk()
            self._end(step, 0.0, "cached")
            return
        self._mount_tree()
        writer = self._writer(step)
        make_disk(ctx, results, writer.path / "disk.raw")
        self._describe_disk()
        entry = self._commit(
            writer,
            {"step": step.name, "parent": self._parent(step), "disk": results.disk_description},
        )
        self.store.use(entry)
        assert results.disk is not None
        results.disk.path = entry.path / "disk.raw"
        ctx.disk = results.disk
        self._end(step, time.monotonic() - started, "done")

    def _describe_disk(self) -> None:
        results = self.results
        if results.manifest is not None and results.disk_description is not None:
            results.manifest = results.manifest.model_copy(
                update={"disk": results.disk_description}
            )

    def _run_output_step(self, step: Step) -> None:
        ctx = self.ctx
        assert step.output is not None
        started = self._begin(step)
        entry = self.store.lookup(step.key)
        if entry is not None and self.store.use(entry) and self._artifact_intact(entry):
            plugin = get_output(step.output)
            partial = ctx.output_path(plugin.suffix)
            link_or_copy(entry.extra / "artifact", partial)
            self.results.artifacts.append(
                ArtifactEntry(
                    file=ctx.partials[partial].name,
                    format=str(step.output),
                    size=int(entry.meta["size"]),
                    sha256=str(entry.meta["sha256"]),
                )
            )
            self._end(step, 0.0, "cached")
            return
        if not needs_disk(step.inputs.get("format", "")):
            self._mount_tree()
        partial = make_output(ctx, step, self.results)
        artifact = self.results.artifacts[-1]
        writer = self._writer(step)
        link_or_copy(partial, writer.extra / "artifact")
        entry = self._commit(
            writer,
            {
                "step": step.name,
                "parent": self._parent(step),
                "sha256": artifact.sha256,
                "size": artifact.size,
            },
        )
        self.store.use(entry)
        self._end(step, time.monotonic() - started, "done")

    def _artifact_intact(self, entry: Entry) -> bool:
        path = entry.extra / "artifact"
        try:
            intact = path.stat().st_size == entry.meta.get("size") and file_sha256(
                path
            ) == entry.meta.get("sha256")
        except OSError:
            intact = False
        if not intact:
            self.store.verify(entry)  # drops it
        return intact

    # -- bookkeeping ----------------------------------------------------------------------

    def _writer(self, step: Step) -> Writer:
        writer = self.store.begin(step.key, step.name)
        self.writers.append(writer)
        return writer

    def _commit(self, writer: Writer, meta: dict[str, Any]) -> Entry:
        entry = writer.commit(meta)
        self.writers.remove(writer)
        return entry

    def _begin(self, step: Step) -> float:
        self.current = step.name
        self.ctx.events.step(step.name)
        runner.reset_peak_memory()
        _reset_own_peak()
        return time.monotonic()

    def _end(self, step: Step, seconds: float, status: str) -> None:
        own = _own_peak_kib()
        tools = runner.peak_memory_kib() or None
        self.results.steps.append(
            StepEntry(
                name=step.name,
                key=step.key,
                seconds=round(seconds, 3),
                status=status,
                memory_kib=own,
                tools_memory_kib=tools,
            )
        )
        self.ctx.events.result(step.name, seconds, status=status)


def _reset_own_peak() -> None:
    """Start measuring osbake's own peak memory afresh (Linux: clear_refs 5)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _own_peak_kib() -> int | None:
    """osbake's peak resident memory (KiB) since the last reset."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def _finish(ctx: Context, results: Results) -> BuildResult:
    assert results.manifest is not None
    finished = time.time()
    manifest = results.manifest.model_copy(
        update={
            "steps": results.steps,
            "artifacts": results.artifacts,
            "build": BuildInfo(
                started=_iso(ctx.started),
                finished=_iso(finished),
                seconds=round(finished - ctx.started, 3),
                rootless=sandbox.rootless(),
                command=shlex.join(["osbake", *sys.argv[1:]]) if sys.argv else "",
            ),
        }
    )
    final_manifest = manifest_path(ctx.outdir, ctx.plan.image)
    partial_manifest = ctx.partial_for(final_manifest)
    partial_manifest.write_text(manifest.to_json())
    papers = {final_manifest}
    if results.sbom is not None:
        final_sbom = sbom_path(ctx.outdir, ctx.plan.image)
        ctx.partial_for(final_sbom).write_text(sbom.to_json(results.sbom))
        papers.add(final_sbom)
    artifacts = []
    for partial, final in ctx.partials.items():
        os.replace(partial, final)
        if final not in papers:
            artifacts.append(final)
    ctx.partials.clear()
    return BuildResult(ctx.plan.image, artifacts, final_manifest, manifest)


def _ignore_interrupts() -> None:
    """Let the clean-up after an interrupt finish: a second Ctrl-C must not cut it short."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _discard(ctx: Context) -> None:
    for partial in ctx.partials:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    ctx.partials.clear()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
