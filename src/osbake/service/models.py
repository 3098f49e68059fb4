"""The console's database tables (SQLAlchemy 2.0). API schemas live in schemas.py."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def now() -> float:
    return time.time()


class Base(DeclarativeBase):
    pass


class Role(StrEnum):
    VIEWER = "viewer"
    BUILDER = "builder"
    ADMIN = "admin"
    WORKER = "worker"  # tokens for `osbake worker`: may run builds, nothing else


class BuildState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (BuildState.SUCCEEDED, BuildState.FAILED, BuildState.CANCELLED)


class BootState(StrEnum):
    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"
    NONE = "none"  # nothing to boot (no disk image)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    created: Mapped[float] = mapped_column(Float, default=now)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the token
    role: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created: Mapped[float] = mapped_column(Float, default=now)
    last_used: Mapped[float | None] = mapped_column(Float, nullable=True)
    expires: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: never
    revoked: Mapped[float | None] = mapped_column(Float, nullable=True)  # when; None: valid
    created_by: Mapped[str] = mapped_column(String(160), default="")

    def valid(self, at: float | None = None) -> bool:
        moment = now() if at is None else at
        return self.revoked is None and (self.expires is None or self.expires > moment)


class WebSession(Base):
    """A log-in: the cookie holds its secret, the database its sha256 (log-out deletes it)."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created: Mapped[float] = mapped_column(Float, default=now)
    expires: Mapped[float] = mapped_column(Float)


class Configuration(Base):
    __tablename__ = "configurations"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[float] = mapped_column(Float, default=now)
    # how the worker's boot test boots its builds (service/boot_settings.py)
    boot_datasource: Mapped[str] = mapped_column(String(16), default="none")
    boot_hardware: Mapped[str] = mapped_column(String(16), default="kvm")
    versions: Mapped[list[ConfigVersion]] = relationship(
        back_populates="configuration", order_by="ConfigVersion.number"
    )


class ConfigVersion(Base):
    """One immutable state of a configuration: its recipe and element folders."""

    __tablename__ = "config_versions"
    __table_args__ = (Index("ix_config_version", "configuration_id", "number", unique=True),)
    id: Mapped[int] = mapped_column(primary_key=True)
    configuration_id: Mapped[int] = mapped_column(ForeignKey("configurations.id"))
    number: Mapped[int] = mapped_column(Integer)
    recipe_file: Mapped[str] = mapped_column(String(512))
    message: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(Text, default="")  # where it was imported from
    digest: Mapped[str] = mapped_column(String(64))  # sha256 over the files
    targets: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [[variant, arch], ...]
    created: Mapped[float] = mapped_column(Float, default=now)
    configuration: Mapped[Configuration] = relationship(back_populates="versions")
    files: Mapped[list[ConfigFile]] = relationship(
        back_populates="version", order_by="ConfigFile.path", cascade="all, delete-orphan"
    )


class ConfigFile(Base):
    __tablename__ = "config_files"
    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("config_versions.id"), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    mode: Mapped[int] = mapped_column(Integer, default=0o644)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    version: Mapped[ConfigVersion] = relationship(back_populates="files")


class Schedule(Base):
    __tablename__ = "schedules"
    id: Mapped[int] = mapped_column(primary_key=True)
    configuration_id: Mapped[int] = mapped_column(ForeignKey("configurations.id"), index=True)
    cron: Mapped[str] = mapped_column(String(128))
    milestone: Mapped[str] = mapped_column(String(64), default="daily")
    variant: Mapped[str | None] = mapped_column(String(128), nullable=True)
    arch: Mapped[str | None] = mapped_column(String(32), nullable=True)
    matrix: Mapped[bool] = mapped_column(default=True)  # every variant x arch
    enabled: Mapped[bool] = mapped_column(default=True)
    next_run: Mapped[float] = mapped_column(Float)
    last_run: Mapped[float | None] = mapped_column(Float, nullable=True)
    configuration: Mapped[Configuration] = relationship()


class Build(Base):
    __tablename__ = "builds"
    id: Mapped[int] = mapped_column(primary_key=True)
    configuration_id: Mapped[int] = mapped_column(ForeignKey("configurations.id"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("config_versions.id"))
    variant: Mapped[str | None] = mapped_column(String(128), nullable=True)
    arch: Mapped[str] = mapped_column(String(32))
    milestone: Mapped[str] = mapped_column(String(64), default="daily", index=True)
    state: Mapped[str] = mapped_column(String(16), default=BuildState.QUEUED, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    failed_step: Mapped[str | None] = mapped_column(String(128), nullable=True)
    current_step: Mapped[str | None] = mapped_column(String(128), nullable=True)
    steps: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{name, state, seconds}]
    requested_by: Mapped[str] = mapped_column(String(64), default="")
    schedule_id: Mapped[int | None] = mapped_column(ForeignKey("schedules.id"), nullable=True)
    retry_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(256), nullable=True)
    claimed_by: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the worker's token
    enqueued: Mapped[float | None] = mapped_column(Float, nullable=True)  # last put on the queue
    # what the worker uploaded: file -> {"size": bytes, "sha256": hex}, hashed by the console
    uploads: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=dict)
    created: Mapped[float] = mapped_column(Float, default=now)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)
    heartbeat: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    image: Mapped[str | None] = mapped_column(String(256), nullable=True)
    recipe_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    boot_state: Mapped[str] = mapped_column(String(16), default=BootState.PENDING)
    boot_detail: Mapped[str] = mapped_column(Text, default="")
    # the configuration's boot-test settings when the build was requested
    boot_datasource: Mapped[str] = mapped_column(String(16), default="none")
    boot_hardware: Mapped[str] = mapped_column(String(16), default="kvm")
    blessed: Mapped[bool] = mapped_column(default=False)
    blessed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    blessed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    disk_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    purged: Mapped[bool] = mapped_column(default=False)  # artifacts removed by retention
    configuration: Mapped[Configuration] = relationship()
    version: Mapped[ConfigVersion] = relationship()
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="build", order_by="Artifact.file", cascade="all, delete-orphan"
    )


class Artifact(Base):
    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id"), index=True)
    file: Mapped[str] = mapped_column(String(512))
    format: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    build: Mapped[Build] = relationship(back_populates="artifacts")


class Package(Base):
    """A package installed in a build's image (from its manifest), for search."""

    __tablename__ = "packages"
    __table_args__ = (Index("ix_package_name_version", "name", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(256))
    arch: Mapped[str] = mapped_column(String(32))


class JobKind(StrEnum):
    PUBLISH = "publish"  # write the console's streams (the blessed builds)
    PUSH = "push"  # sync the published versions of a configuration into a target


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ReleaseJob(Base):
    """A job of the console's release queue: publish the streams, or push into a target."""

    __tablename__ = "release_jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED, index=True)
    build_id: Mapped[int | None] = mapped_column(ForeignKey("builds.id"), nullable=True, index=True)
    configuration_id: Mapped[int | None] = mapped_column(
        ForeignKey("configurations.id"), nullable=True, index=True
    )
    target: Mapped[str] = mapped_column(String(1024), default="")  # a push target's spec
    reason: Mapped[str] = mapped_column(Text, default="")  # what asked for it
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    not_before: Mapped[float] = mapped_column(Float, default=now)  # retries wait
    error: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created: Mapped[float] = mapped_column(Float, default=now)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)
    # every build whose blessing or unblessing this job serves (build_id is the first)
    served: Mapped[list[ReleaseJobBuild]] = relationship(
        order_by="ReleaseJobBuild.build_id", lazy="selectin", cascade="all, delete-orphan"
    )

    @property
    def build_ids(self) -> list[int]:
        """The builds the job serves: its first asker and every build linked to it."""
        ids = {link.build_id for link in self.served}
        if self.build_id is not None:
            ids.add(self.build_id)
        return sorted(ids)


class ReleaseJobBuild(Base):
    """A build a release job serves: one waiting publish job serves every build whose
    blessing or unblessing asked for it while it waited."""

    __tablename__ = "release_job_builds"
    __table_args__ = (Index("ix_release_job_build", "job_id", "build_id", unique=True),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("release_jobs.id", ondelete="CASCADE"))
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"), index=True)


class PushTarget(Base):
    """Where a configuration's published builds go after publishing (no credentials:
    those come from the console's environment or files on its host)."""

    __tablename__ = "push_targets"
    __table_args__ = (Index("ix_push_target", "configuration_id", "spec", unique=True),)
    id: Mapped[int] = mapped_column(primary_key=True)
    configuration_id: Mapped[int] = mapped_column(ForeignKey("configurations.id"))
    spec: Mapped[str] = mapped_column(String(1024))  # glance:CLOUD, ec2:R1,R2, dir:/PATH
    created: Mapped[float] = mapped_column(Float, default=now)
    created_by: Mapped[str] = mapped_column(String(160), default="")


class Publication(Base):
    """A build's version in the console's streams: when it came, and when it left."""

    __tablename__ = "publications"
    id: Mapped[int] = mapped_column(primary_key=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id"), index=True)
    configuration_id: Mapped[int] = mapped_column(ForeignKey("configurations.id"), index=True)
    channel: Mapped[str] = mapped_column(String(32))  # the stream: daily or released
    label: Mapped[str] = mapped_column(String(32))  # the version's label (milestone)
    content_id: Mapped[str] = mapped_column(String(256))
    product: Mapped[str] = mapped_column(String(512))
    version: Mapped[str] = mapped_column(String(64))  # the serial
    paths: Mapped[list[Any]] = mapped_column(JSON, default=list)
    published: Mapped[float] = mapped_column(Float, default=now)
    removed: Mapped[float | None] = mapped_column(Float, nullable=True)
    build: Mapped[Build] = relationship()
