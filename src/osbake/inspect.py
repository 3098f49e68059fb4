"""From an artifact back to its manifest: beside it, or read from inside it."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbake import image_files
from osbake import run as runner
from osbake.disk.sizes import format_size
from osbake.errors import ArtifactError, CommandError
from osbake.manifest import (
    IN_IMAGE_DIR,
    ArtifactEntry,
    Manifest,
    file_sha256,
    load_manifest,
)

MANIFEST_MEMBER = f".{IN_IMAGE_DIR}/manifest.json"


@dataclass
class Inspection:
    artifact: Path
    manifest: Manifest
    source: str  # where the manifest came from
    sha256: str
    entry: ArtifactEntry | None  # the artifact's record in the manifest, if it has one

    @property
    def verified(self) -> bool | None:
        """True if the file matches its manifest entry, False if not, None if no entry."""
        if self.entry is None:
            return None
        return self.entry.sha256 == self.sha256


def inspect_artifact(path: Path) -> Inspection:
    if not path.is_file():
        raise ArtifactError(f"{path} is not a file", hint="give the path of a built artifact")
    digest = file_sha256(path)
    beside = _manifest_beside(path)
    if beside is not None:
        try:
            manifest = load_manifest(beside)
        except (OSError, ValueError) as exc:
            raise ArtifactError(
                f"the manifest beside it, {beside}, cannot be read: {str(exc).splitlines()[0]}",
                hint="restore it from the build's output, or move it away to read the "
                "manifest stored inside the image",
            ) from None
        entry = next((a for a in manifest.artifacts if a.file == path.name), None)
        return Inspection(path, manifest, str(beside), digest, entry)
    text, where = _manifest_inside(path)
    try:
        manifest = Manifest.model_validate_json(text)
    except ValueError as exc:
        raise ArtifactError(
            f"the manifest inside {path} is not one osbake reads: {str(exc).splitlines()[0]}",
            hint="was it built by osbake (or a much newer version of it)?",
        ) from None
    return Inspection(path, manifest, f"inside {path.name} ({where})", digest, None)


def manifest_beside(path: Path) -> Manifest | None:
    """The manifest of the build that made `path`, from beside it (None: there is none)."""
    beside = _manifest_beside(path)
    return load_manifest(beside) if beside is not None else None


def _manifest_beside(path: Path) -> Path | None:
    for candidate in sorted(path.parent.glob("*.manifest.json")):
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if any(a.get("file") == path.name for a in data.get("artifacts", [])):
            return candidate
    return None


def _manifest_inside(path: Path) -> tuple[str | bytes, str]:
    """The manifest's text and where in the artifact it was."""
    name = path.name
    if name.endswith(".iso"):
        # Before the disk images: a hybrid ISO has a partition table too.
        return _from_iso(path), ISO_MANIFEST
    where = f"{IN_IMAGE_DIR}/manifest.json"
    if not name.endswith(".oci.tar") and image_files.is_disk_image(path):
        found = image_files.read_file(path, where)
        part = f"partition {found.partition}, " if found.partition else ""
        if found.volume:
            part += f"LVM {found.volume}, "
        return found.data, f"{part}{found.filesystem}: {where}"
    try:
        if name.endswith(".oci.tar"):
            return _from_oci(path), where
        if ".tar" in name:
            return runner.output(["tar", "-xOf", str(path), MANIFEST_MEMBER]), where
    except CommandError:
        raise ArtifactError(
            f"{path} has no manifest beside it and none inside ({where})",
            hint="was it built by osbake? keep <image>.manifest.json next to the artifact",
        ) from None
    raise ArtifactError(
        f"{path} has no manifest beside it, and osbake cannot read one from inside this "
        "kind of file",
        hint="osbake reads disk images (raw, qcow2, vmdk, vhd, vhdx, raw.tar.*), root "
        "tarballs, OCI archives and live ISOs; or keep <image>.manifest.json next to the "
        "artifact",
    )


# A live ISO carries the image's manifest beside the squashfs (osbake.outputs.iso).
ISO_MANIFEST = "/osbake/manifest.json"


def _from_iso(path: Path) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "manifest.json"
        argv = ["xorriso", "-osirrox", "on", "-indev", str(path)]
        try:
            runner.run([*argv, "-extract", ISO_MANIFEST, str(target)])
        except CommandError:
            target.unlink(missing_ok=True)
        if not target.is_file():
            raise ArtifactError(
                f"{path} has no manifest beside it and none inside ({ISO_MANIFEST})"
            )
        return target.read_text(encoding="utf-8")


def _from_oci(path: Path) -> str:
    index = json.loads(runner.output(["tar", "-xOf", str(path), "index.json"]))
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads(runner.output(["tar", "-xOf", str(path), f"blobs/sha256/{digest}"]))
    layer = manifest["layers"][-1]["digest"].split(":", 1)[1]
    with tempfile.TemporaryDirectory() as tmp:
        runner.run(["tar", "-xf", str(path), "-C", tmp, f"blobs/sha256/{layer}"])
        return runner.output(["tar", "-xOzf", f"{tmp}/blobs/sha256/{layer}", MANIFEST_MEMBER])


def disk_layout(disk: dict[str, Any] | None) -> list[str]:
    """The manifest's disk layout as lines for people: partitions, then volume groups."""
    if not disk:
        return []

    def size(value: Any) -> str:
        return format_size(value) if isinstance(value, int) else str(value or "")

    def fs(item: dict[str, Any]) -> str:
        words = [str(item.get(k) or "") for k in ("fs", "mount")]
        if item.get("fs_uuid"):
            words.append(f"UUID={item['fs_uuid']}")
        return "  ".join(w for w in words if w)

    head = [str(disk.get("table", "")), size(disk.get("size"))]
    if disk.get("sector_size"):
        head.append(f"{disk['sector_size']}-byte sectors")
    lines = ["disk:          " + ", ".join(h for h in head if h)]

    def luks(item: dict[str, Any]) -> str:
        """The container of an encrypted partition or volume, and its file system."""
        found = item.get("luks")
        if not isinstance(found, dict):
            return ""
        return (
            f"LUKS2 {found.get('device', '')} (unlock: {found.get('unlock', '')}, "
            f"UUID={found.get('uuid', '')})  {fs(item)}"
        )

    holders = {g.get("pv"): g.get("name") for g in disk.get("volume_groups", [])}
    for part in disk.get("partitions", []):
        what = f"volume group {holders[part.get('name')]}" if part.get("name") in holders else ""
        what = luks(part) or what
        lines.append(
            f"  {part.get('number', '')} {part.get('name', '')}  {part.get('type', '')}  "
            f"{size(part.get('size'))}  {what or fs(part)}".rstrip()
        )
    for group in disk.get("volume_groups", []):
        lines.append(
            f"  LVM volume group {group.get('name')} on {group.get('pv')}"
            + (f", extents of {size(group.get('extent_size'))}" if "extent_size" in group else "")
        )
        for volume in group.get("volumes", []):
            lines.append(
                f"    {volume.get('name', '')}  {size(volume.get('size'))}  "
                f"{volume.get('device') or ''}  {luks(volume) or fs(volume)}".rstrip()
            )
    return lines
