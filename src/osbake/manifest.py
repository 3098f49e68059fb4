"""The manifest: what went into an image and how to rebuild it.

Written beside every build's artifacts as `<image>.manifest.json`, and (without
the artifact list and timings, which are not known yet) inside the image under
/usr/share/osbake/ together with the normalised recipe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_VERSION = 1
IN_IMAGE_DIR = "/usr/share/osbake"


class Entry(BaseModel):
    model_config = ConfigDict(extra="allow")


class PackageEntry(Entry):
    name: str
    version: str
    arch: str
    source: str
    source_version: str


class ElementEntry(Entry):
    name: str
    sha256: str
    origin: str


class MirrorEntry(Entry):
    source: str
    sha256: str
    date: str = ""


class StepEntry(Entry):
    name: str
    key: str
    seconds: float = 0.0
    status: str = "built"
    # Peak resident memory during the step (KiB): osbake's own process, and the
    # largest command it ran (with everything that command started).
    memory_kib: int | None = None
    tools_memory_kib: int | None = None


class ArtifactEntry(Entry):
    file: str
    format: str
    size: int
    sha256: str


class BuildInfo(Entry):
    started: str = ""
    finished: str = ""
    seconds: float = 0.0
    rootless: bool = False
    command: str = ""


class Manifest(Entry):
    """The manifest of one build (one recipe x variant x arch)."""

    manifest_version: int = MANIFEST_VERSION
    osbake_version: str
    image: str = Field(description="artifact stem")
    name: str
    variant: str | None = None
    arch: str
    distro: str
    release: str
    recipe: dict[str, Any]
    recipe_sha256: str
    recipe_file: str | None = None
    elements: list[ElementEntry] = Field(default_factory=list)
    packages: list[PackageEntry] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    mirror: list[MirrorEntry] = Field(default_factory=list)
    steps: list[StepEntry] = Field(default_factory=list)
    artifacts: list[ArtifactEntry] = Field(default_factory=list)
    boot: list[str] = Field(default_factory=list, description="firmwares the image boots with")
    cmdline: str = ""
    disk: dict[str, Any] | None = Field(None, description="partition layout and identifiers")
    kernel: dict[str, Any] | None = None
    build: BuildInfo = Field(default_factory=BuildInfo)

    def package(self, name: str) -> PackageEntry | None:
        for entry in self.packages:
            if entry.name == name:
                return entry
        return None

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"

    def in_image(self) -> Manifest:
        """The copy stored inside the image: no artifacts, no timings, no host paths."""
        return self.model_copy(
            update={
                # Where the recipe was on the build host is not the image's business, and
                # would make two builds of one recipe from two folders differ.
                "recipe_file": None,
                "artifacts": [],
                "steps": [StepEntry(name=s.name, key=s.key) for s in self.steps],
                "build": BuildInfo(),
            }
        )


def build_epoch(mirror_dates: Iterable[str]) -> int:
    """The time a build's outputs say they were made (seconds since 1970).

    SOURCE_DATE_EPOCH when it is set, else the newest date of the mirror's Release
    files (so two builds from one mirror state say the same), else 0. Never the
    clock: that would make every build's bytes differ.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if epoch.isdigit():
        return int(epoch)
    newest = 0
    for text in mirror_dates:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            newest = max(newest, int(parsedate_to_datetime(text).timestamp()))
    return newest


def recipe_digest(normalised: dict[str, Any]) -> str:
    text = json.dumps(normalised, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(4 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_path(outdir: Path, image: str) -> Path:
    return outdir / f"{image}.manifest.json"


def sbom_path(outdir: Path, image: str) -> Path:
    """The SPDX document written beside the manifest (osbake.sbom)."""
    return outdir / f"{image}.spdx.json"


def load_manifest(path: Path) -> Manifest:
    return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
