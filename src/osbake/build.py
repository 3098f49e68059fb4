"""The build: a plan's steps run in order on a work tree, then the outputs.

`build()` is what the CLI and the console's workers call. It reads as the story
of a build: bootstrap, phases, packages, more phases, manifest, outputs; each
step is a function of the build `Context`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import resource
import secrets
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

import osbake
from osbake import package_pool, sandbox
from osbake import run as runner
from osbake.cache import Entry, Store, Writer, link_or_copy
from osbake.disk import bootloader
from osbake.disk.assemble import AssembledDisk, assemble
from osbake.distros import Distro
from osbake.elements import Phase
from osbake.elements.options import OptionValues
from osbake.elements.phases import run_phase
from osbake.errors import Interrupted, OsbakeError, RecipeError, StepError
from osbake.events import Events
from osbake.formats import FormatError
from osbake.manifest import (
    IN_IMAGE_DIR,
    ArtifactEntry,
    BuildInfo,
    ElementEntry,
    Manifest,
    MirrorEntry,
    PackageEntry,
    StepEntry,
    file_sha256,
    manifest_path,
    recipe_digest,
)
from osbake.outputs import get_output, needs_disk
from osbake.plan import Plan, Step, StepKind, resolve_plan
from osbake.recipe import Recipe, locate
from osbake.recipe.files import copy_source
from osbake.recipe.loader import source_folder
from osbake.settings import Settings


@dataclass
class Context:
    """Everything a step may use; steps change the tree and add to the record."""

    plan: Plan
    settings: Settings
    events: Events
    workdir: Path
    outdir: Path
    steps: list[StepEntry] = field(default_factory=list)
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    partials: dict[Path, Path] = field(default_factory=dict)  # partial -> final
    manifest: Manifest | None = None
    boot: bootloader.BootSetup | None = None
    disk: AssembledDisk | None = None
    disk_description: dict[str, Any] | None = None
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

    tree_dir: Path | None = None

    @property
    def tree(self) -> Path:
        """The root tree: the mount point where the step cache stacks its layers."""
        return self.tree_dir or self.workdir / "tree"

    @property
    def packages(self) -> Path:
        """This build's package folder (shared with the host's pool, see package_pool)."""
        return self.workdir / "packages"

    @property
    def stage(self) -> Path:
        """Files prepared for phase scripts, visible as /run/osbake/stage in the image."""
        return self.workdir / "stage"

    @cached_property
    def host_apt_proxy(self) -> str | None:
        """The apt proxy to use while building (only with the apt-proxy element)."""
        if "apt-proxy" not in self.options:
            return None
        configured = self.options["apt-proxy"].get("proxy")
        if configured:
            return str(configured)
        return host_apt_proxy()

    def apt_environment(self) -> dict[str, str]:
        proxy = self.host_apt_proxy
        return {"OSBAKE_APT_PROXY": proxy} if proxy else {}

    # This build's token in the output folder (see OutputClaim); set by execute().
    output_token: str = ""

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


def host_apt_proxy() -> str | None:
    """The host's apt HTTP proxy (Acquire::http::Proxy), if it has one."""
    if not runner.exists("apt-config"):
        return None
    text = runner.output(["apt-config", "dump", "Acquire::http::Proxy"])
    for line in text.splitlines():
        if line.startswith("Acquire::http::Proxy "):
            value = line.split(" ", 1)[1].strip().rstrip(";").strip('"')
            if value and value.upper() != "DIRECT" and value != "false":
                return value
    return None


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
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        argv += [f"--mtime=@{epoch}", "--clamp-mtime"]
    argv += [f"--exclude={pattern}" for pattern in TAR_EXCLUDES]
    argv.append(".")
    runner.run(argv, events=ctx.events)


@dataclass
class BuildResult:
    image: str
    artifacts: list[Path]
    manifest_path: Path
    manifest: Manifest


# -- the steps -----------------------------------------------------------------------------


def bootstrap(ctx: Context, step: Step) -> None:
    ctx.distro.bootstrap(ctx)


def install_packages(ctx: Context, step: Step) -> None:
    ctx.distro.install_packages(ctx, list(step.inputs["packages"]))


def phase(ctx: Context, step: Step) -> None:
    assert step.phase is not None
    if step.phase == Phase.INSTALL:
        copy_static_files(ctx)
    run_phase(ctx, step.phase)
    if step.phase == Phase.INSTALL:
        # Every package is in: the initramfs is made now, once. From here on the
        # image behaves as an installed system (a package installed later remakes
        # it), and a change to a later step (a run: line) does not remake it.
        ctx.distro.prepare_boot(ctx)
    if step.phase == Phase.BLOCK_DEVICE and ctx.plan.disk is not None:
        ctx.boot = bootloader.prepare(ctx, ctx.plan.disk, list(ctx.recipe.boot), ctx.plan.cmdline)
    if step.phase == Phase.FINALISE:
        ctx.distro.finish(ctx)


def make_disk(ctx: Context, step: Step, image: Path) -> None:
    assert ctx.plan.disk is not None
    setup = ctx.boot or bootloader.BootSetup()
    ctx.disk = assemble(ctx, ctx.plan.disk, setup, image)
    ctx.disk_description = ctx.disk.describe(ctx.plan.disk)


def write_manifest(ctx: Context, step: Step) -> None:
    plan = ctx.plan
    normalised = plan.recipe.normalised()
    mirror = [
        MirrorEntry(source=source, sha256=state["sha256"], date=state.get("date", ""))
        for source, state in plan.distro.mirror_state().items()
    ]
    ctx.manifest = Manifest(
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
    staged = ctx.stage / "osbake"
    staged.mkdir(parents=True, exist_ok=True)
    (staged / "manifest.json").write_text(ctx.manifest.in_image().to_json())
    (staged / "recipe.yaml").write_text(yaml.safe_dump(normalised, sort_keys=False))
    sandbox.run_in_tree(
        ctx.tree,
        [
            "sh",
            "-c",
            f"mkdir -p {IN_IMAGE_DIR} && "
            f"install -m 0644 /run/osbake/in/manifest.json /run/osbake/in/recipe.yaml "
            f"{IN_IMAGE_DIR}/",
        ],
        binds=[sandbox.Bind(staged, "/run/osbake/in")],
        events=ctx.events,
    )


def make_output(ctx: Context, step: Step) -> Path:
    """Write one output (to its partial name in the output folder); return that path."""
    assert step.output is not None
    plugin = get_output(step.output, ctx.plan.output_settings.get(str(step.output)))
    path = plugin.write(ctx)
    ctx.artifacts.append(
        ArtifactEntry(
            file=ctx.partials[path].name,
            format=str(step.output),
            size=path.stat().st_size,
            sha256=file_sha256(path),
        )
    )
    return path


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
    }


TREE_ACTIONS: dict[StepKind, Callable[[Context, Step], None]] = {
    StepKind.BOOTSTRAP: bootstrap,
    StepKind.PHASE: phase,
    StepKind.PACKAGES: install_packages,
    StepKind.MANIFEST: write_manifest,
}


def copy_static_files(ctx: Context) -> None:
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
            package_pool.check_out(settings.package_cache(plan.distro.name), ctx.packages)
            runner.run()
            runner.current = "publish artifacts"
            result = _finish(ctx)
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
        store.reap()

    def run(self) -> None:
        plan = self.ctx.plan
        tree_steps = [s for s in plan.steps if s.kind in TREE_ACTIONS]
        reusable = self._reusable(tree_steps)
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
            TREE_ACTIONS[step.kind](ctx, step)
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
        ctx = self.ctx
        meta: dict[str, Any] = {"step": step.name, "parent": self._parent(step)}
        if step.kind == StepKind.MANIFEST and ctx.manifest is not None:
            (writer.extra / "manifest.json").write_text(ctx.manifest.to_json())
        if step.phase == Phase.BLOCK_DEVICE and ctx.boot is not None:
            for name in ("core_img", "boot_img"):
                path = getattr(ctx.boot, name)
                if path is not None:
                    shutil.copyfile(path, writer.extra / path.name)
            meta["boot"] = {
                "core_img": ctx.boot.core_img is not None,
                "firmware": ctx.boot.firmware,
                "cmdline": ctx.boot.cmdline,
                "efi_files": ctx.boot.efi_files,
            }
        return meta

    def _restore(self, step: Step, entry: Entry) -> None:
        ctx = self.ctx
        if step.kind == StepKind.MANIFEST:
            ctx.manifest = Manifest.model_validate_json((entry.extra / "manifest.json").read_text())
        boot = entry.meta.get("boot")
        if step.phase == Phase.BLOCK_DEVICE and boot is not None:
            ctx.boot = bootloader.BootSetup(
                core_img=entry.extra / "core.img" if boot["core_img"] else None,
                boot_img=entry.extra / "boot.img" if boot["core_img"] else None,
                firmware=boot["firmware"],
                cmdline=boot["cmdline"],
                efi_files=boot["efi_files"],
            )

    def _parent(self, step: Step) -> str | None:
        steps = self.ctx.plan.steps
        index = steps.index(step)
        if step.kind == StepKind.OUTPUT:
            from_disk = self.ctx.disk is not None and needs_disk(step.inputs.get("format", ""))
            wanted = StepKind.DISK if from_disk else StepKind.MANIFEST
            return next((s.key for s in steps if s.kind == wanted), None)
        return steps[index - 1].key if index else None

    # -- the disk and the outputs ---------------------------------------------------------

    def _run_disk_step(self, step: Step) -> None:
        ctx = self.ctx
        started = self._begin(step)
        entry = self.store.lookup(step.key)
        if entry is not None and self.store.use(entry) and self.store.verify(entry):
            description = entry.meta["disk"]
            ctx.disk = AssembledDisk(entry.path / "disk.raw", int(description["size"]), [])
            ctx.disk_description = description
            self._describe_disk()
            self._end(step, 0.0, "cached")
            return
        self._mount_tree()
        writer = self._writer(step)
        make_disk(ctx, step, writer.path / "disk.raw")
        self._describe_disk()
        entry = self._commit(
            writer, {"step": step.name, "parent": self._parent(step), "disk": ctx.disk_description}
        )
        self.store.use(entry)
        assert ctx.disk is not None
        ctx.disk.path = entry.path / "disk.raw"
        self._end(step, time.monotonic() - started, "done")

    def _describe_disk(self) -> None:
        ctx = self.ctx
        if ctx.manifest is not None and ctx.disk_description is not None:
            ctx.manifest = ctx.manifest.model_copy(update={"disk": ctx.disk_description})

    def _run_output_step(self, step: Step) -> None:
        ctx = self.ctx
        assert step.output is not None
        started = self._begin(step)
        entry = self.store.lookup(step.key)
        if entry is not None and self.store.use(entry) and self._artifact_intact(entry):
            plugin = get_output(step.output)
            partial = ctx.output_path(plugin.suffix)
            link_or_copy(entry.extra / "artifact", partial)
            ctx.artifacts.append(
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
        partial = make_output(ctx, step)
        artifact = ctx.artifacts[-1]
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
        self.ctx.steps.append(
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


def _finish(ctx: Context) -> BuildResult:
    assert ctx.manifest is not None
    finished = time.time()
    manifest = ctx.manifest.model_copy(
        update={
            "steps": ctx.steps,
            "artifacts": ctx.artifacts,
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
    artifacts = []
    for partial, final in ctx.partials.items():
        os.replace(partial, final)
        if final != final_manifest:
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


@contextlib.contextmanager
def workspace(settings: Settings, image: str) -> Iterator[Path]:
    """A private work directory, locked while in use and removed afterwards.

    The lock file beside it is taken before the directory exists, so work
    directories of killed builds (whose lock is free) can be removed safely.
    """
    root = settings.work_dir
    root.mkdir(parents=True, exist_ok=True)
    _reap_stale(root)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    # The PID is 1 inside the build's PID namespace: a random token keeps names apart.
    workdir = root / f"{image}-{stamp}-{secrets.token_hex(4)}"
    lock_path = workdir.with_name(workdir.name + ".lock")
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        workdir.mkdir()
        try:
            yield workdir
        finally:
            with contextlib.suppress(OsbakeError):
                sandbox.remove_tree(workdir)
            lock_path.unlink(missing_ok=True)


def _reap_stale(root: Path) -> None:
    """Remove work directories of builds that are gone (their lock is free or missing)."""
    for lock_path in root.glob("*.lock"):
        try:
            handle = lock_path.open("r")
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running build holds it
            with contextlib.suppress(OsbakeError):
                sandbox.remove_tree(lock_path.with_suffix(""))
            lock_path.unlink(missing_ok=True)
    # A build takes its lock before it makes its directory and drops it only after
    # removing it, so a directory without a lock file belongs to no running build.
    for entry in root.iterdir():
        if entry.is_dir() and not entry.with_name(entry.name + ".lock").exists():
            with contextlib.suppress(OsbakeError):
                sandbox.remove_tree(entry)


# -- the output folder ---------------------------------------------------------------------
#
# Outputs are written under partial names and renamed when the whole build
# succeeded. A build killed on the way (SIGKILL, power loss) cannot remove its
# partials, so each build claims the output folder with a lock file of its own,
# `.osbake-<token>.lock`, held (flock) for as long as it runs, and names every
# partial `.<final name>.<token>.partial`. The next build in the folder removes
# the partials of every token whose lock is free or gone: only files of that
# pattern, which osbake owns, and never those of a build that is still running.

OUTPUT_LOCK_PREFIX = ".osbake-"
OUTPUT_LOCK_SUFFIX = ".lock"
_TOKEN = r"[0-9a-f]{16}"
_PARTIAL = re.compile(rf"^\.(?P<final>.+)\.(?P<token>{_TOKEN})\.partial$")
_OUTPUT_LOCK = re.compile(rf"^\.osbake-(?P<token>{_TOKEN})\.lock$")


def partial_name(final: str, token: str) -> str:
    return f".{final}.{token}.partial"


def _output_lock(outdir: Path, token: str) -> Path:
    return outdir / f"{OUTPUT_LOCK_PREFIX}{token}{OUTPUT_LOCK_SUFFIX}"


@contextlib.contextmanager
def claim_outputs(outdir: Path) -> Iterator[str]:
    """Hold a token of this build in `outdir` for its partial outputs (see above).

    Removes what interrupted builds left first. On the way out (however the build
    ends) this build's own partials are removed and its lock file with them.
    """
    reap_partials(outdir)
    while True:
        token = secrets.token_hex(8)
        path = _output_lock(outdir, token)
        handle = path.open("a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        # A reaper removed the file between open and lock: take another token.
        handle.close()
    try:
        yield token
    finally:
        _remove_partials(outdir, token)
        path.unlink(missing_ok=True)
        handle.close()


def reap_partials(outdir: Path) -> list[Path]:
    """Remove the partial outputs of builds that are gone; return what was removed."""
    removed: list[Path] = []
    try:
        names = os.listdir(outdir)
    except OSError:
        return removed
    live: set[str] = set()
    for name in names:
        match = _OUTPUT_LOCK.match(name)
        if match is None:
            continue
        path = outdir / name
        try:
            handle = path.open("r")
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                live.add(match["token"])  # a running build holds it
                continue
            removed += _remove_partials(outdir, match["token"])
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    # A build locks its token before its first partial and removes its partials
    # before its lock file, so a partial whose token has no lock belongs to no
    # running build (a reaper that was killed half-way, or an older osbake).
    for name in names:
        match = _PARTIAL.match(name)
        token = match["token"] if match is not None else None
        if token is not None and token not in live and not _output_lock(outdir, token).exists():
            removed += _remove(outdir / name)
    return removed


def _remove_partials(outdir: Path, token: str) -> list[Path]:
    removed: list[Path] = []
    try:
        names = os.listdir(outdir)
    except OSError:
        return removed
    for name in names:
        match = _PARTIAL.match(name)
        if match is not None and match["token"] == token:
            removed += _remove(outdir / name)
    return removed


def _remove(path: Path) -> list[Path]:
    # Only plain files: osbake never writes anything else under a partial name.
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
            return [path]
    except FileNotFoundError:
        pass
    return []
