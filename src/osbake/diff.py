"""What changed between two builds: packages, elements, kernel, boot, partitions, sizes.

Either side is a manifest (`<image>.manifest.json`) or an artifact whose manifest
osbake can find (beside it, or inside a tarball or OCI image, as `osbake inspect`
does). When both sides are root tarballs (`tar`, `tar.zst`), the files in them are
compared too, by path, type, size and mode.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from osbake.errors import ArtifactError
from osbake.manifest import Manifest, PackageEntry

# A manifest lists a few thousand packages; anything this large is not one.
MAX_MANIFEST_BYTES = 64 << 20
# Files listed per kind of change in the text report (the JSON has them all).
TEXT_FILE_LIMIT = 50
# A root tarball has tens of thousands of members; more than this is not one.
MAX_MEMBERS = 2_000_000


@dataclass(frozen=True)
class Side:
    """One side of a diff: where it came from and what it says."""

    path: str
    manifest: Manifest
    tarball: Path | None = None  # a root tarball whose files can be listed


@dataclass(frozen=True)
class PackageChange:
    name: str
    old: str
    new: str
    change: str  # upgraded, downgraded, rebuilt (same version, other arch or source)


@dataclass(frozen=True)
class SizeChange:
    name: str
    old: int | None
    new: int | None

    @property
    def delta(self) -> int:
        return (self.new or 0) - (self.old or 0)


@dataclass(frozen=True)
class FileChange:
    path: str
    old_size: int | None
    new_size: int | None
    what: str  # added, removed, size, mode, type, target


@dataclass
class Diff:
    old: str
    new: str
    packages_added: list[PackageEntry] = field(default_factory=list)
    packages_removed: list[PackageEntry] = field(default_factory=list)
    packages_changed: list[PackageChange] = field(default_factory=list)
    elements: list[tuple[str, str, str]] = field(default_factory=list)  # name, old, new sha
    fields: list[tuple[str, Any, Any]] = field(default_factory=list)  # release, cmdline, ...
    kernel: list[tuple[str, Any, Any]] = field(default_factory=list)
    partitions: list[SizeChange] = field(default_factory=list)
    partition_changes: list[tuple[str, str, Any, Any]] = field(default_factory=list)
    artifacts: list[SizeChange] = field(default_factory=list)
    recipe_keys: list[str] = field(default_factory=list)
    files: list[FileChange] | None = None  # None: not compared

    @property
    def empty(self) -> bool:
        return not (
            self.packages_added
            or self.packages_removed
            or self.packages_changed
            or self.elements
            or self.fields
            or self.kernel
            or any(p.delta for p in self.partitions)
            or self.partition_changes
            or self.recipe_keys
            or self.files
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "identical": self.empty,
            "packages": {
                "added": [_package(p) for p in self.packages_added],
                "removed": [_package(p) for p in self.packages_removed],
                "changed": [asdict(c) for c in self.packages_changed],
            },
            "elements": [{"name": n, "old": o, "new": w} for n, o, w in self.elements],
            "fields": [{"field": f, "old": o, "new": n} for f, o, n in self.fields],
            "kernel": [{"field": f, "old": o, "new": n} for f, o, n in self.kernel],
            "partitions": [
                {"name": p.name, "old": p.old, "new": p.new, "delta": p.delta}
                for p in self.partitions
            ],
            "partition_changes": [
                {"partition": p, "field": f, "old": o, "new": n}
                for p, f, o, n in self.partition_changes
            ],
            "artifacts": [
                {"format": a.name, "old": a.old, "new": a.new, "delta": a.delta}
                for a in self.artifacts
            ],
            "recipe_keys": self.recipe_keys,
            "files": None if self.files is None else [asdict(f) for f in self.files],
        }


def _package(entry: PackageEntry) -> dict[str, str]:
    return {"name": entry.name, "version": entry.version, "arch": entry.arch}


# -- reading either side ---------------------------------------------------------------


def read_side(path: Path) -> Side:
    """A manifest file, or an artifact whose manifest osbake can find."""
    if not path.exists():
        raise ArtifactError(
            f"{path} does not exist", hint="give an image or its <image>.manifest.json"
        )
    if not path.is_file():
        raise ArtifactError(
            f"{path} is not a file", hint="give an image or its <image>.manifest.json"
        )
    if path.name.endswith(".json"):
        return Side(str(path), _load_manifest(path))
    from osbake.inspect import inspect_artifact

    found = inspect_artifact(path)
    tarball = path if _is_root_tarball(path, found.manifest) else None
    return Side(str(path), found.manifest, tarball)


def _load_manifest(path: Path) -> Manifest:
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ArtifactError(
            f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB: not an osbake manifest",
            hint="give the <image>.manifest.json that osbake build wrote",
        )
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except ValueError as exc:
        first = str(exc).splitlines()
        raise ArtifactError(
            f"{path} is not an osbake manifest: {first[1] if len(first) > 1 else first[0]}",
            hint="give the <image>.manifest.json that osbake build wrote, or the image",
        ) from None


def _is_root_tarball(path: Path, manifest: Manifest) -> bool:
    entry = next((a for a in manifest.artifacts if a.file == path.name), None)
    if entry is not None:
        return entry.format in ("tar", "tar.zst")
    return path.name.endswith((".tar", ".tar.zst")) and not path.name.endswith(".oci.tar")


# -- comparing -------------------------------------------------------------------------


def diff(old: Side, new: Side) -> Diff:
    a, b = old.manifest, new.manifest
    result = Diff(old=old.path, new=new.path)
    _packages(a, b, result)
    old_elements = {e.name: e.sha256 for e in a.elements}
    new_elements = {e.name: e.sha256 for e in b.elements}
    for name in sorted(old_elements.keys() | new_elements.keys()):
        before, after = old_elements.get(name, ""), new_elements.get(name, "")
        if before != after:
            result.elements.append((name, before, after))
    for name in ("name", "variant", "arch", "distro", "release", "cmdline"):
        if getattr(a, name) != getattr(b, name):
            result.fields.append((name, getattr(a, name), getattr(b, name)))
    if a.boot != b.boot:
        result.fields.append(("boot", a.boot, b.boot))
    old_mirrors = sorted((m.source, m.date) for m in a.mirror)
    new_mirrors = sorted((m.source, m.date) for m in b.mirror)
    if old_mirrors != new_mirrors:
        result.fields.append(("mirror", old_mirrors, new_mirrors))
    result.kernel = _dict_changes(a.kernel or {}, b.kernel or {})
    _partitions(a.disk, b.disk, result)
    old_art = {x.format: x.size for x in a.artifacts}
    new_art = {x.format: x.size for x in b.artifacts}
    result.artifacts = [
        SizeChange(f, old_art.get(f), new_art.get(f))
        for f in sorted(old_art.keys() | new_art.keys())
    ]
    old_recipe, new_recipe = a.recipe or {}, b.recipe or {}
    result.recipe_keys = sorted(
        k for k in old_recipe.keys() | new_recipe.keys() if old_recipe.get(k) != new_recipe.get(k)
    )
    if old.tarball is not None and new.tarball is not None:
        result.files = diff_files(old.tarball, new.tarball)
    return result


def _packages(a: Manifest, b: Manifest, result: Diff) -> None:
    old = {p.name: p for p in a.packages}
    new = {p.name: p for p in b.packages}
    result.packages_added = [new[n] for n in sorted(new.keys() - old.keys())]
    result.packages_removed = [old[n] for n in sorted(old.keys() - new.keys())]
    for name in sorted(old.keys() & new.keys()):
        before, after = old[name], new[name]
        order = compare_versions(before.version, after.version)
        if order < 0:
            result.packages_changed.append(
                PackageChange(name, before.version, after.version, "upgraded")
            )
        elif order > 0:
            result.packages_changed.append(
                PackageChange(name, before.version, after.version, "downgraded")
            )
        elif (before.arch, before.source, before.source_version) != (
            after.arch,
            after.source,
            after.source_version,
        ):
            result.packages_changed.append(
                PackageChange(
                    name,
                    f"{before.version} ({before.arch}, {before.source})",
                    f"{after.version} ({after.arch}, {after.source})",
                    "rebuilt",
                )
            )


def _dict_changes(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(k, a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


# What identifies a partition's content; sizes are reported apart, ids change with it.
_PARTITION_FIELDS = ("type", "fs", "mount", "label")


def _partitions(a: dict[str, Any] | None, b: dict[str, Any] | None, result: Diff) -> None:
    old = {str(p.get("name")): p for p in (a or {}).get("partitions", []) if isinstance(p, dict)}
    new = {str(p.get("name")): p for p in (b or {}).get("partitions", []) if isinstance(p, dict)}
    for name in _ordered(old, new):
        before, after = old.get(name), new.get(name)
        if before is None or after is None:
            result.partition_changes.append(
                (
                    name,
                    "partition",
                    "absent" if before is None else "present",
                    "absent" if after is None else "present",
                )
            )
        else:
            for key in _PARTITION_FIELDS:
                if before.get(key) != after.get(key):
                    result.partition_changes.append((name, key, before.get(key), after.get(key)))
        result.partitions.append(SizeChange(name, _size(before), _size(after)))
        old_free, new_free = _free(before), _free(after)
        if old_free is not None or new_free is not None:
            result.partitions.append(SizeChange(f"{name} (free)", old_free, new_free))
    if a and b and a.get("size") != b.get("size"):
        result.partitions.append(SizeChange("disk", _size(a), _size(b)))


def _ordered(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    names = list(old)
    names += [n for n in new if n not in old]
    return names


def _size(part: dict[str, Any] | None) -> int | None:
    value = None if part is None else part.get("size")
    return value if isinstance(value, int) else None


def _free(part: dict[str, Any] | None) -> int | None:
    value = None if part is None else part.get("free")
    return value if isinstance(value, int) else None


# -- files of two root tarballs --------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    kind: str
    size: int
    mode: int
    target: str


def diff_files(old: Path, new: Path) -> list[FileChange]:
    before = dict(_members(old))
    after = dict(_members(new))
    changes: list[FileChange] = []
    for path in sorted(before.keys() | after.keys()):
        a, b = before.get(path), after.get(path)
        if a is None:
            assert b is not None
            changes.append(FileChange(path, None, b.size, "added"))
        elif b is None:
            changes.append(FileChange(path, a.size, None, "removed"))
        elif a.kind != b.kind:
            changes.append(FileChange(path, a.size, b.size, "type"))
        elif a.size != b.size:
            changes.append(FileChange(path, a.size, b.size, "size"))
        elif a.target != b.target:
            changes.append(FileChange(path, a.size, b.size, "target"))
        elif a.mode != b.mode:
            changes.append(FileChange(path, a.size, b.size, "mode"))
    return changes


def _members(path: Path) -> Iterator[tuple[str, _Member]]:
    with _open_tar(path) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for count, info in enumerate(archive):
                    if count >= MAX_MEMBERS:
                        raise ArtifactError(
                            f"{path} has more than {MAX_MEMBERS} members: not an image's tree",
                            hint="give the tar or tar.zst output of an osbake build",
                        )
                    name = "/" + info.name.removeprefix("./").rstrip("/")
                    kind = (
                        "dir"
                        if info.isdir()
                        else "link"
                        if info.issym()
                        else "hardlink"
                        if info.islnk()
                        else "file"
                        if info.isfile()
                        else "special"
                    )
                    yield name, _Member(kind, info.size, info.mode, info.linkname)
        except (tarfile.TarError, OSError, EOFError, ValueError, _ZstdError) as exc:
            raise ArtifactError(
                f"{path} cannot be read as a tarball: {exc}",
                hint="give the tar or tar.zst output of an osbake build",
            ) from None


try:
    from zstandard import ZstdError as _ZstdError
except ImportError:  # pragma: no cover - zstandard is a dependency

    class _ZstdError(Exception):  # type: ignore[no-redef]
        pass


def _open_tar(path: Path) -> IO[bytes]:
    handle = path.open("rb")
    if not path.name.endswith(".zst"):
        return handle
    import zstandard

    reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(handle, closefd=True)
    return reader


# -- Debian version order (deb-version(7)) ------------------------------------------------


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as version a sorts before, like or after b in dpkg's order."""
    ea, ua, ra = _split_version(a)
    eb, ub, rb = _split_version(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def _split_version(version: str) -> tuple[int, str, str]:
    epoch = 0
    if ":" in version:
        head, version = version.split(":", 1)
        epoch = int(head) if head.isdigit() else 0
    upstream, _, revision = version.rpartition("-")
    if not upstream:
        return epoch, revision, ""
    return epoch, upstream, revision


def _order(char: str) -> int:
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        # Non-digits: character by character, ~ before everything (also the end).
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ca = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            cb = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ca != cb:
                return -1 if ca < cb else 1
            i += 1 if i < len(a) and not a[i].isdigit() else 0
            j += 1 if j < len(b) and not b[j].isdigit() else 0
        start_i, start_j = i, j
        while i < len(a) and a[i].isdigit():
            i += 1
        while j < len(b) and b[j].isdigit():
            j += 1
        na = int(a[start_i:i] or "0")
        nb = int(b[start_j:j] or "0")
        if na != nb:
            return -1 if na < nb else 1
    return 0


# -- text for people ---------------------------------------------------------------------


def render(result: Diff) -> str:
    lines = [f"--- {result.old}", f"+++ {result.new}"]
    if result.empty:
        lines.append("no differences in packages, elements, kernel, boot, partitions or recipe")
    for name, before, after in result.fields:
        lines.append(f"{name}: {_show(before)} -> {_show(after)}")
    if result.recipe_keys:
        lines.append("recipe: " + ", ".join(result.recipe_keys) + " changed")
    total = len(result.packages_added) + len(result.packages_removed) + len(result.packages_changed)
    if total:
        counts = {"upgraded": 0, "downgraded": 0, "rebuilt": 0}
        for change in result.packages_changed:
            counts[change.change] += 1
        lines.append(
            f"packages: {len(result.packages_added)} added, {len(result.packages_removed)} "
            f"removed, {counts['upgraded']} upgraded, {counts['downgraded']} downgraded"
            + (f", {counts['rebuilt']} rebuilt" if counts["rebuilt"] else "")
        )
        lines += [f"  + {p.name} {p.version} ({p.arch})" for p in result.packages_added]
        lines += [f"  - {p.name} {p.version} ({p.arch})" for p in result.packages_removed]
        lines += [
            f"  ~ {c.name} {c.old} -> {c.new}"
            + ("" if c.change == "upgraded" else f" ({c.change})")
            for c in result.packages_changed
        ]
    for name, before, after in result.elements:
        state = "added" if not before else "removed" if not after else "changed"
        lines.append(f"element {name}: {state}")
    if result.kernel:
        lines.append("kernel:")
        lines += [f"  {k}: {_show(o)} -> {_show(n)}" for k, o, n in result.kernel]
    for part, key, before, after in result.partition_changes:
        lines.append(f"partition {part}: {key} {_show(before)} -> {_show(after)}")
    sized = [p for p in result.partitions if p.delta]
    if sized:
        lines.append("partitions:")
        lines += [
            f"  {p.name}: {_bytes(p.old)} -> {_bytes(p.new)} ({_signed(p.delta)})" for p in sized
        ]
    if any(a.delta for a in result.artifacts):
        lines.append("artifacts:")
        lines += [
            f"  {a.name}: {_bytes(a.old)} -> {_bytes(a.new)} ({_signed(a.delta)})"
            for a in result.artifacts
            if a.delta
        ]
    if result.files is not None:
        lines += _render_files(result.files)
    return "\n".join(lines) + "\n"


def _render_files(files: list[FileChange]) -> list[str]:
    if not files:
        return ["files: the same paths, types, sizes and modes"]
    lines = [f"files: {len(files)} changed"]
    # Files that changed come first, then removed ones, then new ones (often many).
    order = {"added": 2, "removed": 1}
    shown = sorted(files, key=lambda change: (order.get(change.what, 0), change.path))
    for change in shown[:TEXT_FILE_LIMIT]:
        if change.what == "added":
            lines.append(f"  + {change.path} ({_bytes(change.new_size)})")
        elif change.what == "removed":
            lines.append(f"  - {change.path} ({_bytes(change.old_size)})")
        elif change.what == "size":
            delta = (change.new_size or 0) - (change.old_size or 0)
            lines.append(f"  ~ {change.path} ({_signed(delta)})")
        else:
            lines.append(f"  ~ {change.path} ({change.what})")
    if len(files) > TEXT_FILE_LIMIT:
        lines.append(f"  ... and {len(files) - TEXT_FILE_LIMIT} more (--json lists them all)")
    return lines


def _show(value: Any) -> str:
    if value is None or value == "":
        return "(none)"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _bytes(value: int | None) -> str:
    if value is None:
        return "(none)"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def _signed(value: int) -> str:
    return ("+" if value > 0 else "-") + _bytes(abs(value))
