"""A changelog per published version: what changed against the product's previous version.

When a version is added to a product of a stream that has an older version, the
publisher writes `changelog.txt` (what `osbake diff` prints between the two
manifests) and `changelog.json` (what `osbake diff --json` prints) into the new
version's folder, as items of ftype `changelog` and `changelog.json`: mirrors
copy them with the images, and deleting the version deletes them. Their content
depends only on the two manifests, the product id and the two serials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from osbake.diff import MAX_MANIFEST_BYTES, Side, diff, render
from osbake.events import Events
from osbake.manifest import Manifest
from osbake.publish.streams import Tree, version_key

TEXT = "changelog.txt"
JSON = "changelog.json"
# item name (also its ftype) -> file name in the version's folder
FILES = {"changelog": TEXT, "changelog.json": JSON}
FTYPES = frozenset(FILES)


@dataclass(frozen=True)
class Changelog:
    previous: str  # the serial it is against
    text: bytes
    json: bytes


def previous_version(versions: dict[str, Tree], serial: str, sha256: str) -> str | None:
    """The newest version older than `serial` that is another build (None: there is none)."""
    older = [
        name
        for name, version in versions.items()
        if version_key(name) < version_key(serial) and version.get("manifest_sha256") != sha256
    ]
    return max(older, key=version_key) if older else None


def against_previous(
    repo: Path,
    pid: str,
    versions: dict[str, Tree],
    serial: str,
    manifest: Manifest,
    sha256: str,
    events: Events,
) -> Changelog | None:
    """The changelog of the new version `serial` of product `pid`, or None when the
    product has no older version (or its manifest cannot be read: said in the log)."""
    previous = previous_version(versions, serial, sha256)
    if previous is None:
        return None
    old = _read_manifest(repo, versions[previous])
    if old is None:
        events.log(f"{pid} {serial}: no changelog, the manifest of {previous} cannot be read")
        return None
    result = diff(Side(f"{pid} {previous}", old), Side(f"{pid} {serial}", manifest))
    data = json.dumps(result.to_json(), indent=1, sort_keys=True) + "\n"
    return Changelog(previous, render(result).encode(), data.encode())


def _read_manifest(repo: Path, version: Tree) -> Manifest | None:
    item = version.get("items", {}).get("manifest")
    path = item.get("path") if isinstance(item, dict) else None
    if not isinstance(path, str):
        return None
    root = repo.resolve()
    target = (root / path).resolve()
    if root not in target.parents:  # the stream names a file outside the tree
        return None
    try:
        if target.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        return Manifest.model_validate_json(target.read_bytes())
    except (OSError, ValueError):
        return None
