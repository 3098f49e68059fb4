"""From blessing to the clouds: the console's streams and its release queue.

Blessing (or unblessing) a build asks for a **publish** job: the console's own
simplestreams tree (`DATA/publish`) is made to list exactly the blessed builds
(osbake.publish's `publish_streams`, signed with the console's key, the newest
`--keep` versions of each product), each in the stream of its milestone. Each
build newly published then asks for one **push** job per push target of its
configuration: `osbake.publish.sync` from the console's tree (checked with its
keyring) into Glance, EC2 or a mirror folder.

Jobs run in the console's release queue (`ReleaseQueue`, a thread of the
console's process, where the tree and the key are), one at a time, never in
a request; a failed job is tried again (`max_attempts`), each attempt's log is
kept in `DATA/logs/job-N.jsonl`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from osbake.errors import OsbakeError, UsageError
from osbake.events import Event, Events, JsonLinesSink
from osbake.publish.streams import DEFAULT_CONTENT_ID, Label, stream_for
from osbake.publish.sync import sync
from osbake.publish.tree import publish_streams, read_streams
from osbake.service import signing_key
from osbake.service.builds import artifact_dir
from osbake.service.config import ServiceSettings
from osbake.service.db import Database
from osbake.service.models import (
    Build,
    BuildState,
    JobKind,
    JobState,
    Publication,
    PushTarget,
    ReleaseJob,
    ReleaseJobBuild,
    now,
)

log = logging.getLogger("osbake.service")

TREE = "publish"  # DATA/publish: the streams the console serves
FILES_DIR = "images"  # the published files, under DATA/publish/images (served at /images/)
RETRY_TICKS = 2  # a failed job waits this many console ticks times its attempts, then again
PUSH_KINDS = ("glance", "ec2", "dir")
CLOUD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")


def tree_dir(settings: ServiceSettings) -> Path:
    return settings.data_dir / TREE


def label_for(milestone: str) -> Label:
    """A build's milestone as a stream label: alpha, beta, rc and final are released
    milestones; daily, weekly and free text go to the daily stream."""
    try:
        return Label(milestone.strip().lower())
    except ValueError:
        return Label.DAILY


# -- push targets --------------------------------------------------------------------------


def check_push_target(spec: str) -> str:
    """A push target as an admin gives it: glance:[CLOUD], ec2:REGION[,REGION...] or
    dir:/ABSOLUTE/PATH. No credentials: those stay in the console's environment and files."""
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    if not sep or kind not in PUSH_KINDS:
        raise UsageError(
            f"push target {text[:80]!r}: name its kind",
            hint="glance:CLOUD (clouds.yaml), ec2:REGION[,REGION...] or dir:/PATH",
        )
    if kind == "glance" and rest and not CLOUD_NAME.fullmatch(rest):
        raise UsageError(f"push target {text[:80]!r}: a cloud of clouds.yaml is a plain name")
    if kind == "ec2":
        regions = rest.split(",")
        if not rest or not all(REGION.fullmatch(r) for r in regions):
            raise UsageError(
                f"push target {text[:80]!r}: list EC2 regions", hint="e.g. ec2:eu-west-1,us-east-1"
            )
        if len(set(regions)) != len(regions):
            raise UsageError(f"push target {text[:80]!r}: a region is listed twice")
    if kind == "dir":
        path = Path(rest)
        if (
            not rest.startswith("/")
            or ".." in path.parts
            or any(ord(c) < 0x20 or c == "\x7f" for c in rest)
            or len(rest) > 1000
        ):
            raise UsageError(
                f"push target {text[:80]!r}: a mirror folder is an absolute path",
                hint="e.g. dir:/srv/mirror",
            )
    return text


def set_push_targets(
    session: Session, configuration_id: int, specs: list[str], who: str
) -> list[PushTarget]:
    wanted = list(dict.fromkeys(check_push_target(s) for s in specs))
    existing = session.scalars(
        select(PushTarget).where(PushTarget.configuration_id == configuration_id)
    ).all()
    for target in existing:
        if target.spec not in wanted:
            session.delete(target)
    have = {t.spec for t in existing}
    for spec in wanted:
        if spec not in have:
            session.add(PushTarget(configuration_id=configuration_id, spec=spec, created_by=who))
    session.commit()
    return push_targets(session, configuration_id)


def push_targets(session: Session, configuration_id: int) -> list[PushTarget]:
    return list(
        session.scalars(
            select(PushTarget)
            .where(PushTarget.configuration_id == configuration_id)
            .order_by(PushTarget.id)
        ).all()
    )


# -- the queue -----------------------------------------------------------------------------


def request_publish(session: Session, reason: str, build_id: int | None = None) -> ReleaseJob:
    """Ask for the streams to be written again. One waiting publish job serves every ask
    made while it waits; it records each build that asked (`ReleaseJob.served`), once."""
    job = session.scalars(
        select(ReleaseJob)
        .where(ReleaseJob.kind == JobKind.PUBLISH, ReleaseJob.state == JobState.QUEUED)
        .order_by(ReleaseJob.id)
    ).first()
    waiting = job is not None
    if job is None:
        job = ReleaseJob(kind=JobKind.PUBLISH, build_id=build_id, reason=reason)
        session.add(job)
    if build_id is not None and build_id not in {link.build_id for link in job.served}:
        job.served.append(ReleaseJobBuild(build_id=build_id))
    try:
        session.commit()
    except IntegrityError:
        # Only a waiting job can clash: the same build asked at the same moment and its
        # link came first. Then the job serves it already; anything else is a real error.
        session.rollback()
        if not (waiting and build_id is not None and _serves(session, job.id, build_id)):
            raise
    return job


def _serves(session: Session, job_id: int, build_id: int) -> bool:
    return (
        session.scalars(
            select(ReleaseJobBuild.id).where(
                ReleaseJobBuild.job_id == job_id, ReleaseJobBuild.build_id == build_id
            )
        ).first()
        is not None
    )


def request_push(
    session: Session, configuration_id: int, spec: str, build_id: int | None, reason: str
) -> ReleaseJob:
    job = ReleaseJob(
        kind=JobKind.PUSH,
        configuration_id=configuration_id,
        build_id=build_id,
        target=spec,
        reason=reason,
    )
    session.add(job)
    session.commit()
    return job


def job_log(settings: ServiceSettings, job_id: int) -> Path:
    return settings.logs_dir / f"job-{job_id}.jsonl"


def read_job_events(settings: ServiceSettings, job_id: int) -> list[Event]:
    path = job_log(settings, job_id)
    if not path.exists():
        return []
    found: list[Event] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            found.append(event)
    return found


class ReleaseQueue:
    """Runs the release jobs of the console, one at a time, in the console's process."""

    def __init__(self, settings: ServiceSettings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._running = threading.Lock()

    def loop(self, stop: threading.Event, every: float = 1.0) -> None:
        while not stop.wait(every):
            try:
                self.run_pending()
            except Exception:  # the loop must survive a bad round
                log.exception("release queue round failed")

    def run_pending(self) -> int:
        """Run every job that is due now; the number run."""
        done = 0
        with self._running:
            while (job_id := self._claim()) is not None:
                self._run(job_id)
                done += 1
        return done

    def _claim(self) -> int | None:
        with self.db.session() as session:
            due = session.scalars(
                select(ReleaseJob.id)
                .where(ReleaseJob.state == JobState.QUEUED, ReleaseJob.not_before <= now())
                .order_by(ReleaseJob.id)
                .limit(1)
            ).first()
            if due is None:
                return None
            taken = session.execute(
                update(ReleaseJob)
                .where(ReleaseJob.id == due, ReleaseJob.state == JobState.QUEUED)
                .values(
                    state=JobState.RUNNING,
                    started=now(),
                    attempts=ReleaseJob.attempts + 1,
                    error="",
                )
            )
            session.commit()
            return due if taken.rowcount == 1 else None  # type: ignore[attr-defined]

    def _run(self, job_id: int) -> None:
        with self.db.session() as session, self._events(job_id) as events:
            job = session.get(ReleaseJob, job_id)
            assert job is not None
            events.step(f"{job.kind} (attempt {job.attempts} of {job.max_attempts})")
            try:
                if job.kind == JobKind.PUBLISH:
                    result = publish(session, self.settings, events)
                else:
                    result = push(session, self.settings, job, events)
            except Exception as exc:  # every failure is the job's, told in its log
                message = exc.message if isinstance(exc, OsbakeError) else repr(exc)
                hint = getattr(exc, "hint", None)
                events.log(f"failed: {message}" + (f" ({hint})" if hint else ""))
                session.rollback()
                job = session.get(ReleaseJob, job_id)
                assert job is not None
                job.error = message
                if job.attempts < job.max_attempts:
                    job.state = JobState.QUEUED
                    wait = RETRY_TICKS * self.settings.tick_seconds * job.attempts
                    job.not_before = now() + wait
                    events.log(f"tried {job.attempts} times; trying again")
                else:
                    job.state = JobState.FAILED
                    job.finished = now()
                session.commit()
                log.warning("release job %s (%s) failed: %s", job_id, job.kind, message)
                return
            job.state = JobState.SUCCEEDED
            job.result = result
            job.finished = now()
            session.commit()
            events.log("done")

    @contextmanager
    def _events(self, job_id: int) -> Iterator[Events]:
        path = job_log(self.settings, job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            yield Events(JsonLinesSink(handle))


# -- the jobs ------------------------------------------------------------------------------


def _manifest_path(settings: ServiceSettings, build: Build) -> Path | None:
    image = (build.manifest or {}).get("image")
    if not image:
        return None
    path = artifact_dir(settings, build.id) / f"{image}.manifest.json"
    return path if path.is_file() else None


def publish(session: Session, settings: ServiceSettings, events: Events) -> dict[str, Any]:
    """Make the console's streams list exactly the blessed builds whose files are here."""
    blessed = session.scalars(
        select(Build)
        .where(
            Build.blessed.is_(True),
            Build.purged.is_(False),
            Build.state == BuildState.SUCCEEDED,
        )
        .order_by(Build.id)
    ).all()
    daily: list[tuple[Build, Path]] = []
    released: list[tuple[Build, Path, Label]] = []
    for build in blessed:
        manifest = _manifest_path(settings, build)
        if manifest is None:
            events.log(f"build {build.id}: no manifest on the console's disk, not published")
            continue
        label = label_for(build.milestone)
        if label is Label.DAILY:
            daily.append((build, manifest))
        else:
            released.append((build, manifest, label))
    tree = tree_dir(settings)
    session.commit()  # no transaction stays open while files are copied and signed
    result = publish_streams(
        tree,
        daily=[m for _, m in daily],
        released=[(m, label) for _, m, label in released],
        content_prefix=DEFAULT_CONTENT_ID,
        sign=signing_key.fingerprint(settings),
        keep=settings.keep_builds,
        events=events,
        files_dir=FILES_DIR,
        gnupg_home=signing_key.gnupg_home(settings),
    )
    listed = _listed(tree)
    order = [b for b, _ in daily] + [b for b, _, _ in released]
    live: dict[tuple[int, str], Any] = {}
    for build, version in zip(order, result.versions, strict=True):
        if (version.content_id, version.product, version.version) in listed:
            live[(build.id, version.content_id)] = (build, version)
    new_builds = _record(session, live)
    for build in new_builds:
        for target in push_targets(session, build.configuration_id):
            reason = f"build {build.id} published"
            request_push(session, build.configuration_id, target.spec, build.id, reason)
    return {
        "published": sorted({b for b, _ in live}),
        "new": [b.id for b in new_builds],
        "removed": result.removed,
    }


def _listed(tree: Path) -> set[tuple[str, str, str]]:
    return {
        (cid, pid, vname)
        for cid, products in read_streams(tree).items()
        for pid, product in products.get("products", {}).items()
        for vname in product.get("versions", {})
    }


def _record(session: Session, live: dict[tuple[int, str], Any]) -> list[Build]:
    """Note what the streams list now: new publications, and those that left."""
    current = session.scalars(select(Publication).where(Publication.removed.is_(None))).all()
    seen: set[tuple[int, str]] = set()
    for row in current:
        key = (row.build_id, row.content_id)
        entry = live.get(key)
        if entry is None or entry[1].version != row.version:
            row.removed = now()
        else:
            seen.add(key)
    new_builds: dict[int, Build] = {}
    for key, (build, version) in live.items():
        if key in seen:
            continue
        session.add(
            Publication(
                build_id=build.id,
                configuration_id=build.configuration_id,
                channel=str(stream_for(Label(version.label))),
                label=version.label,
                content_id=version.content_id,
                product=version.product,
                version=version.version,
                paths=list(version.paths),
            )
        )
        new_builds[build.id] = build
    session.commit()
    return list(new_builds.values())


def push(
    session: Session, settings: ServiceSettings, job: ReleaseJob, events: Events
) -> dict[str, Any]:
    """Sync the configuration's published versions into the job's target."""
    if job.configuration_id is None:
        raise UsageError(f"push job {job.id} names no configuration")
    rows = session.scalars(
        select(Publication).where(
            Publication.configuration_id == job.configuration_id,
            Publication.removed.is_(None),
        )
    ).all()
    tree = tree_dir(settings)
    wanted = {(r.content_id, r.product, r.version) for r in rows}
    shas = sorted(
        {
            str(version.get("manifest_sha256"))
            for cid, products in read_streams(tree).items()
            for pid, product in products.get("products", {}).items()
            for vname, version in product.get("versions", {}).items()
            if (cid, pid, vname) in wanted
        }
    )
    if not shas:
        events.log("nothing of this configuration is published now: nothing to push")
        return {"selected": 0, "transferred": [], "target": job.target}
    events.log(f"pushing {len(shas)} published builds into {job.target}")
    session.commit()  # no transaction stays open during the upload
    staging = settings.data_dir / "push-staging"
    staging.mkdir(mode=0o700, exist_ok=True)
    result = sync(
        str(tree),
        job.target,
        keyring=signing_key.keyring_file(settings),
        filters=[f"manifest_sha256~^({'|'.join(shas)})$"],
        events=events,
        staging=staging,
    )
    return {
        "selected": len(result.selected),
        "transferred": [i.path for i in result.transferred],
        "bytes": result.bytes,
        "target": result.target,
    }
