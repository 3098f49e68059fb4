"""The state one deploy carries from step to step."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from osbake.deploy.images import ImageSource
from osbake.deploy.layout import Layout
from osbake.deploy.report import DeployReport
from osbake.deploy.target import Host, Target
from osbake.events import Events


@dataclass
class SeedVolume:
    path: Path
    size: int
    filesystem: str
    label: str


@dataclass
class Context:
    image_path: Path
    target_path: Path
    seed_path: Path | None
    configdrive: bool
    grow: bool
    verify: bool
    force: bool
    sha256: str | None
    checksum: bool
    size: int | None
    raw: bool
    events: Events
    host: Host
    tmp: Path
    image: ImageSource | None = None
    layout: Layout = field(default_factory=lambda: Layout(None))
    target: Target | None = None
    expected: str | None = None
    seed: SeedVolume | None = None
    fd: int | None = None
    lock_fd: int | None = None  # held from the first write to the end (file targets)
    report: DeployReport | None = None
    manifest_path: Path | None = None

    @property
    def disk(self) -> Path:
        """The path being written: a new target file is written under a temporary name
        and renamed when everything succeeded."""
        if self.target is not None and self.target.created:
            return self.target_path.with_name(f".{self.target_path.name}.osbake-partial")
        return self.target_path
