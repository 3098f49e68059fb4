"""Builds: requests, the queue's states, events from workers, lookups and search.

States: queued -> running -> succeeded | failed | cancelled. A failed build has a
reason that names the failing step. Workers report events (the JSON lines of
`osbake build --json`) which are kept as the build's log and update its steps.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from osbake.errors import Location, UsageError
from osbake.manifest import Manifest
from osbake.service.config import ServiceSettings
from osbake.service.models import (
    Artifact,
    BootState,
    Build,
    BuildState,
    Configuration,
    ConfigVersion,
    Package,
    now,
)
from osbake.service.problems import Conflict, NotFound
from osbake.service.queue import BuildQueue

MILESTONES = ("daily", "weekly", "alpha", "beta", "rc", "final")
# What the worker's boot test boots: disk images and live ISOs.
BOOTABLE_FORMATS = ("qcow2", "raw", "iso")
TAIL_LINES = 40


def check_milestone(label: str) -> str:
    label = label.strip()
    if not label or len(label) > 64 or any(c in label for c in "\n\r\t/"):
        raise UsageError(
            f"'{label}' is not a milestone label",
            hint=f"use one of {', '.join(MILESTONES)} or a short free text (no '/')",
        )
    return label


def get_build(session: Session, build_id: int) -> Build:
    build = session.get(Build, build_id)
    if build is None:
        raise NotFound(f"there is no build {build_id}")
    return build


def get_configuration(session: Session, name: str) -> Configuration:
    configuration = session.scalar(select(Configuration).where(Configuration.name == name))
    if configuration is None:
        raise NotFound(f"there is no configuration '{name}'")
    return configuration


def get_version(
    session: Session, configuration: Configuration, number: int | None
) -> ConfigVersion:
    query = select(ConfigVersion).where(ConfigVersion.configuration_id == configuration.id)
    if number is None:
        query = query.order_by(ConfigVersion.number.desc()).limit(1)
    else:
        query = query.where(ConfigVersion.number == number)
    version = session.scalar(query)
    if version is None:
        raise NotFound(
            f"configuration '{configuration.name}' has no version {number or ''}".strip()
        )
    return version


# -- requesting --------------------------------------------------------------------------


def targets_for(
    version: ConfigVersion, variant: str | None, arch: str | None, matrix: bool
) -> list[tuple[str | None, str]]:
    """The (variant, arch) pairs a request names, checked against the recipe."""
    known = [(t[0], str(t[1])) for t in version.targets]
    if matrix:
        return known
    chosen = [t for t in known if t[0] == (variant or None)]
    if not chosen:
        variants = sorted({t[0] or "(base)" for t in known})
        raise UsageError(
            f"the recipe has no variant '{variant}'",
            location=None,
            hint=f"variants: {', '.join(variants)}",
        )
    if arch:
        chosen = [t for t in chosen if t[1] == arch]
        if not chosen:
            arches = sorted({t[1] for t in known if t[0] == (variant or None)})
            raise UsageError(
                f"the recipe does not build '{variant or '(base)'}' for '{arch}'",
                hint=f"arches: {', '.join(arches)}",
            )
        return chosen
    return chosen[:1]


def request_builds(
    session: Session,
    queue: BuildQueue,
    version: ConfigVersion,
    *,
    variant: str | None = None,
    arch: str | None = None,
    matrix: bool = False,
    milestone: str = "daily",
    requested_by: str = "",
    schedule_id: int | None = None,
    retry_of: int | None = None,
) -> list[Build]:
    """Queue one build per target; commits, then puts the ids on the queue."""
    milestone = check_milestone(milestone)
    builds = [
        Build(
            configuration_id=version.configuration_id,
            version_id=version.id,
            variant=target_variant,
            arch=target_arch,
            milestone=milestone,
            state=BuildState.QUEUED,
            requested_by=requested_by,
            schedule_id=schedule_id,
            retry_of=retry_of,
            steps=[],
            boot_datasource=version.configuration.boot_datasource,
            boot_hardware=version.configuration.boot_hardware,
        )
        for target_variant, target_arch in targets_for(version, variant, arch, matrix)
    ]
    session.add_all(builds)
    session.commit()
    for build in builds:
        _enqueue(session, queue, build)
    return builds


def _enqueue(session: Session, queue: BuildQueue, build: Build) -> None:
    build.enqueued = now()
    session.commit()
    queue.enqueue(build.id)


def requeue_lost(session: Session, queue: BuildQueue, after: float) -> list[int]:
    """Put back on the queue every queued build that is not on it (at least once delivery).

    A worker that took a build's id and died before claiming it, or a queue that
    lost its contents, leaves a build "queued" in the database that no worker will
    ever take. A build is only put back when it has been missing for `after`
    seconds since it was last put on the queue, so that a worker that has just
    taken it has the time to claim it; should both run it, the second claim is
    refused (a build is claimed once).
    """
    limit = now() - after
    stale = session.scalars(
        select(Build)
        .where(Build.state == BuildState.QUEUED)
        .where((Build.enqueued.is_(None)) | (Build.enqueued < limit))
        .order_by(Build.id)
    ).all()
    if not stale:
        return []
    waiting = set(queue.pending())
    lost = [b for b in stale if b.id not in waiting]
    for build in lost:
        _enqueue(session, queue, build)
    return [b.id for b in lost]


def retry(session: Session, queue: BuildQueue, build: Build, requested_by: str) -> Build:
    if not BuildState(build.state).finished:
        raise Conflict(f"build {build.id} is still {build.state}", hint="cancel it first")
    (fresh,) = request_builds(
        session,
        queue,
        build.version,
        variant=build.variant,
        arch=build.arch,
        milestone=build.milestone,
        requested_by=requested_by,
        retry_of=build.id,
    )
    return fresh


def cancel(session: Session, build: Build) -> Build:
    state = BuildState(build.state)
    if state.finished:
        raise Conflict(f"build {build.id} has already {state}")
    if state == BuildState.QUEUED:
        _end(build, BuildState.CANCELLED, "cancelled before it started")
    else:
        build.cancel_requested = True
    session.commit()
    return build


def queue_position(session: Session, build: Build) -> int | None:
    """1 for the next build to start; None unless queued."""
    if build.state != BuildState.QUEUED:
        return None
    ahead = session.scalar(
        select(func.count(Build.id)).where(Build.state == BuildState.QUEUED, Build.id < build.id)
    )
    return (ahead or 0) + 1


# -- what workers report -------------------------------------------------------------------


@dataclass
class Claim:
    build: Build
    recipe_file: str


def claim(session: Session, build_id: int, worker: str, token_id: int | None) -> Build:
    """A worker takes a queued build; refused for any other state.

    The build is bound to the worker's token: only that token reports on it.
    """
    build = session.get(Build, build_id, with_for_update=True)
    if build is None:
        raise NotFound(f"there is no build {build_id}")
    if build.state != BuildState.QUEUED:
        raise Conflict(f"build {build_id} is {build.state}, not queued")
    build.state = BuildState.RUNNING
    build.worker = worker[:256]
    build.claimed_by = token_id
    build.started = build.heartbeat = now()
    session.commit()
    return build


def claimed(session: Session, build_id: int, token_id: int | None) -> Build:
    """A build the asking worker token claimed (a worker reports only on its own builds)."""
    build = get_build(session, build_id)
    if token_id is None or build.claimed_by != token_id:
        raise Conflict(
            f"build {build_id} was not claimed by this worker",
            hint="a worker reports only on the builds it claimed",
        )
    return build


def log_path(settings: ServiceSettings, build_id: int) -> Path:
    return settings.logs_dir / f"{build_id}.jsonl"


def record_events(
    session: Session, settings: ServiceSettings, build: Build, events: Iterable[dict[str, Any]]
) -> bool:
    """Keep a worker's events; returns whether the build should stop (cancel)."""
    if build.state != BuildState.RUNNING:
        raise Conflict(f"build {build.id} is {build.state}, not running")
    path = log_path(settings, build.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = [dict(s) for s in build.steps or []]
    with path.open("a", encoding="utf-8") as log:
        for event in events:
            if not isinstance(event, dict) or "event" not in event:
                continue
            log.write(json.dumps(event, sort_keys=True) + "\n")
            _apply(build, steps, event)
    build.steps = steps
    build.heartbeat = now()
    session.commit()
    return build.cancel_requested


def _apply(build: Build, steps: list[dict[str, Any]], event: dict[str, Any]) -> None:
    kind = event["event"]
    if kind == "begin":
        build.image = str(event.get("image") or "") or None
        known = {s["name"] for s in steps}
        steps.extend(
            {"name": s.get("name", "?"), "describe": s.get("describe", ""), "state": "pending"}
            for s in event.get("steps", [])
            if s.get("name") not in known
        )
    elif kind == "step":
        build.current_step = str(event.get("name"))
        step = _find(steps, build.current_step)
        step.update(state="running", started=event.get("time"))
    elif kind == "result":
        step = _find(steps, str(event.get("name")))
        step.update(state=event.get("status", "done"), seconds=event.get("seconds"))
    elif kind == "finish" and not event.get("ok"):
        failed = event.get("step")
        if failed:
            build.failed_step = str(failed)
            _find(steps, build.failed_step)["state"] = "failed"
        if event.get("error"):
            build.reason = str(event["error"])


def _find(steps: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for step in steps:
        if step["name"] == name:
            return step
    step = {"name": name, "describe": "", "state": "pending"}
    steps.append(step)
    return step


def finish(
    session: Session,
    build: Build,
    *,
    ok: bool,
    error: str | None = None,
    step: str | None = None,
    manifest: dict[str, Any] | None = None,
    boot_state: str | None = None,
    boot_detail: str = "",
) -> Build:
    """The worker is done with the build."""
    if build.state != BuildState.RUNNING:
        raise Conflict(f"build {build.id} is {build.state}, not running")
    if boot_state is not None:
        build.boot_state = BootState(boot_state)
        build.boot_detail = boot_detail
    if build.cancel_requested:
        _end(build, BuildState.CANCELLED, f"cancelled during step '{build.current_step}'")
    elif ok:
        problem = None
        try:
            parsed = parse_manifest(manifest) if manifest is not None else None
        except UsageError as exc:
            parsed, problem = None, exc.message
        if parsed is not None:
            problem = unverified(build, parsed)
        if problem is not None:
            build.failed_step = "upload"
            _end(build, BuildState.FAILED, f"the console refused the build's artifacts: {problem}")
        else:
            if parsed is not None:
                index_manifest(session, build, parsed)
            _end(build, BuildState.SUCCEEDED, "")
    else:
        # before the first step (the recipe did not load, the host lacks a tool): 'setup'
        build.failed_step = step or build.failed_step or build.current_step or "setup"
        reason = error or build.reason or "the build failed"
        if build.failed_step and build.failed_step not in reason:
            reason = f"step '{build.failed_step}' failed: {reason}"
        _end(build, BuildState.FAILED, reason)
    session.commit()
    return build


UNFINISHED_STEP = ("running", "pending")


def _end(build: Build, state: BuildState, reason: str) -> None:
    """The build is over: its step list is final (no step is left running or pending)."""
    build.state = state
    build.reason = reason
    build.finished = now()
    build.current_step = None if state == BuildState.SUCCEEDED else build.current_step
    if state != BuildState.SUCCEEDED and build.boot_state == BootState.PENDING:
        build.boot_state = BootState.NONE
        build.boot_detail = "no boot test: the build did not succeed"
    # A new list of new dicts: the JSON column only sees a change when its value is new.
    steps = [dict(s) for s in build.steps or []]
    for step in steps:
        if step.get("state") == "running":
            step["state"] = {BuildState.SUCCEEDED: "done", BuildState.FAILED: "failed"}.get(
                state, "cancelled"
            )
        elif step.get("state") == "pending":
            step["state"] = "skipped"
    build.steps = steps


def reap(session: Session, settings: ServiceSettings) -> list[int]:
    """Fail running builds whose worker stopped reporting (killed, host gone)."""
    limit = now() - settings.heartbeat_timeout
    stale = session.scalars(
        select(Build).where(Build.state == BuildState.RUNNING, Build.heartbeat < limit)
    ).all()
    for build in stale:
        silent = now() - (build.heartbeat or build.started or now())
        where = f" during step '{build.current_step}'" if build.current_step else ""
        build.failed_step = build.current_step
        _end(
            build,
            BuildState.FAILED,
            f"the worker {build.worker or ''} stopped reporting{where} "
            f"(no word for {silent:.0f} s; was it killed?); retry the build",
        )
    session.commit()
    return [b.id for b in stale]


# -- artifacts, manifests and search -------------------------------------------------------


def artifact_dir(settings: ServiceSettings, build_id: int) -> Path:
    return settings.artifacts_dir / str(build_id)


def keep_verified(settings: ServiceSettings, build: Build) -> None:
    """After the end: only a succeeded build's verified artifacts and manifest stay."""
    folder = artifact_dir(settings, build.id)
    if not folder.is_dir():
        return
    if build.state != BuildState.SUCCEEDED:
        shutil.rmtree(folder, ignore_errors=True)
        return
    kept = {a.file for a in build.artifacts}
    if build.manifest is not None:
        kept.add(f"{build.manifest.get('image')}.manifest.json")
    for item in folder.iterdir():
        if item.name not in kept:
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)


def parse_manifest(data: dict[str, Any]) -> Manifest:
    try:
        return Manifest.model_validate(data)
    except ValueError as exc:
        raise UsageError(
            f"the manifest is not valid: {str(exc).splitlines()[0]}",
            location=Location(key="manifest"),
        ) from None


def unverified(build: Build, manifest: Manifest) -> str | None:
    """What is wrong with the uploads against the manifest's claims (None: all verified).

    The console hashed every file as it arrived; the manifest's size and sha256 of
    each artifact must be those of the file it holds.
    """
    uploads = build.uploads or {}
    for artifact in manifest.artifacts:
        got = uploads.get(artifact.file)
        if got is None:
            return f"'{artifact.file}' was never uploaded"
        if got["sha256"] != artifact.sha256 or got["size"] != artifact.size:
            return (
                f"'{artifact.file}' is {got['size']} bytes with sha256 {got['sha256']}, "
                f"but the manifest says {artifact.size} bytes with sha256 {artifact.sha256}"
            )
    return None


def manifest_file(manifest: Manifest) -> str:
    return f"{manifest.image}.manifest.json"


def index_manifest(session: Session, build: Build, manifest: Manifest) -> Manifest:
    build.manifest = manifest.model_dump(mode="json")
    build.image = manifest.image
    build.recipe_sha256 = manifest.recipe_sha256
    build.artifacts = [
        Artifact(file=a.file, format=a.format, size=a.size, sha256=a.sha256)
        for a in manifest.artifacts
    ]
    session.add_all(
        Package(build_id=build.id, name=p.name, version=p.version, arch=p.arch)
        for p in manifest.packages
    )
    return manifest


def search_packages(
    session: Session, name: str, version: str | None = None, limit: int = 200
) -> list[tuple[Build, Package]]:
    """Which builds' images contain package `name` (at `version`)?"""
    conditions = [Package.name == name]
    if version:
        conditions.append(Package.version == version)
    query = (
        select(Build, Package)
        .join(Package, Package.build_id == Build.id)
        .where(and_(*conditions))
        .order_by(Build.id.desc())
        .limit(limit)
    )
    return [(row[0], row[1]) for row in session.execute(query).all()]


@dataclass
class Origin:
    """Where an image came from: the build, its configuration version and variant."""

    build: Build | None
    version: ConfigVersion | None
    how: str
    candidates: list[Build]


def find_origin(
    session: Session, *, sha256: str | None = None, manifest: dict[str, Any] | None = None
) -> Origin:
    """From an artifact's sha256 or a manifest back to the build and configuration."""
    if sha256:
        digest = sha256.strip().lower()
        artifact = session.scalar(select(Artifact).where(Artifact.sha256 == digest).limit(1))
        if artifact is None:
            raise NotFound(
                f"no build made an artifact with sha256 {digest}",
                hint="check the checksum, or paste the image's manifest instead",
            )
        return Origin(artifact.build, artifact.build.version, "artifact sha256", [artifact.build])
    if manifest is None:
        raise UsageError("give an artifact's sha256 or a manifest")
    try:
        parsed = Manifest.model_validate(manifest)
    except ValueError as exc:
        raise UsageError(
            f"this is not an osbake manifest: {str(exc).splitlines()[0]}",
            hint="paste <image>.manifest.json, or /usr/share/osbake/manifest.json from the image",
        ) from None
    for entry in parsed.artifacts:
        artifact = session.scalar(select(Artifact).where(Artifact.sha256 == entry.sha256).limit(1))
        if artifact is not None:
            return Origin(
                artifact.build,
                artifact.build.version,
                "artifact sha256 in the manifest",
                [artifact.build],
            )
    candidates = list(
        session.scalars(
            select(Build)
            .where(Build.recipe_sha256 == parsed.recipe_sha256, Build.arch == parsed.arch)
            .order_by(Build.id.desc())
        ).all()
    )
    candidates = [b for b in candidates if b.variant == parsed.variant]
    if not candidates:
        raise NotFound(
            f"no build here was made from this manifest's recipe ({parsed.recipe_sha256[:12]})",
            hint="was the image built by this console? rebuild it from its recipe instead",
        )
    started = parsed.build.started
    exact = [
        b
        for b in candidates
        if b.manifest and b.manifest.get("build", {}).get("started") == started
    ]
    chosen = exact[0] if exact else candidates[0]
    how = "manifest (same build)" if exact else "manifest (same recipe, variant and arch)"
    return Origin(chosen, chosen.version, how, candidates)


# -- logs ----------------------------------------------------------------------------------


def read_events(settings: ServiceSettings, build_id: int, after: int = 0) -> list[dict[str, Any]]:
    """The build's events from number `after` on (0-based line numbers)."""
    path = log_path(settings, build_id)
    if not path.exists():
        return []
    events = []
    with path.open(encoding="utf-8") as log:
        for number, line in enumerate(log):
            if number < after:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            event["seq"] = number
            events.append(event)
    return events


def render_line(event: dict[str, Any]) -> str | None:
    """One event as a plain log line (None for events that are not log lines)."""
    kind = event.get("event")
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("time", 0)))
    if kind == "step":
        return f"{stamp} ==> {event.get('name')}"
    if kind == "command":
        return f"{stamp} $ {event.get('line')}"
    if kind == "log":
        return f"{stamp} {event.get('line')}"
    if kind == "result":
        seconds = float(event.get("seconds") or 0)
        return f"{stamp} <== {event.get('name')}: {event.get('status')} in {seconds:.1f}s"
    if kind == "finish":
        if event.get("ok"):
            return f"{stamp} build succeeded"
        return f"{stamp} build failed in step '{event.get('step')}': {event.get('error')}"
    return None


def failure_tail(settings: ServiceSettings, build: Build, lines: int = TAIL_LINES) -> list[str]:
    """The last lines of the failing step's log (what a failed build page shows first)."""
    events = read_events(settings, build.id)
    if build.failed_step:
        start = 0
        for index, event in enumerate(events):
            if event.get("event") == "step" and event.get("name") == build.failed_step:
                start = index
        events = events[start:]
    rendered = [line for line in (render_line(e) for e in events) if line is not None]
    return rendered[-lines:]


def elapsed(build: Build) -> float | None:
    if build.started is None:
        return None
    return (build.finished or now()) - build.started
