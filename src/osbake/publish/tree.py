"""Writing a simplestreams tree: builds in, index and products files (and pages) out.

The story of an update: read what the tree has, lay out each new version (copy
its files under a new directory, write its README, index.html and SHA256SUMS),
write the products files (and their signed .sjson), write the index last, then
delete what no version references any more. A reader that fetches the index
before the update sees the old tree whole; one that fetches it after sees the
new one whole. Published files never change and never move.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from osbake.errors import ArtifactError, PublishError, UsageError
from osbake.events import Events, null_events
from osbake.inspect import _manifest_beside as manifest_beside
from osbake.manifest import Manifest
from osbake.publish import changelog, pages, signing
from osbake.publish.streams import (
    DATATYPE,
    DEFAULT_CONTENT_ID,
    INDEX_FORMAT,
    INDEX_JSON,
    INDEX_SJSON,
    PRODUCTS_FORMAT,
    STREAMS_DIR,
    Label,
    Stream,
    Tree,
    content_id,
    dump,
    ftype_for,
    products_path,
    signed_index,
    signed_path,
    stream_for,
    timestamp,
    version_key,
)

LOCK_NAME = ".osbake-publish.lock"
SERIAL_RE = re.compile(r"^\d{8}(\.\d+)?$")
CHUNK = 4 << 20

# Debian's codenames and release numbers, for the product's `version` and aliases.
DEBIAN_RELEASES = {
    "buster": "10",
    "bullseye": "11",
    "bookworm": "12",
    "trixie": "13",
    "forky": "14",
    "duke": "15",
}


@dataclass(frozen=True)
class Release:
    """One build to publish: its manifest, which artifacts (None: all), label, serial."""

    manifest: Path
    label: Label = Label.DAILY
    serial: str | None = None
    files: tuple[str, ...] | None = None


@dataclass
class PublishedVersion:
    content_id: str
    product: str
    version: str
    label: str
    paths: list[str]
    new: bool


@dataclass
class PublishResult:
    repo: Path
    versions: list[PublishedVersion] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    signed: bool = False

    @property
    def index(self) -> Path:
        return self.repo / (INDEX_SJSON if self.signed else INDEX_JSON)


# -- the public entry points -----------------------------------------------------------------


def publish(
    sources: Sequence[Path | Release],
    repo: Path,
    *,
    label: Label = Label.DAILY,
    serial: str | None = None,
    content_prefix: str = DEFAULT_CONTENT_ID,
    sign: str | None = None,
    keep: int | None = None,
    events: Events | None = None,
) -> PublishResult:
    """Publish builds (artifact or manifest paths, or `Release`s) into the tree at `repo`.

    A path to an artifact publishes that artifact (and the build's manifest); a
    path to a manifest publishes every artifact it lists. `label` picks the
    stream: `daily` goes to the daily stream, the milestones to the released one.
    """
    releases = resolve_sources(sources, label=label, serial=serial)
    return _update(repo, releases, content_prefix, sign, keep, events or null_events(), None)


def publish_streams(
    repo: Path,
    *,
    daily: Sequence[Path],
    released: Sequence[Path | tuple[Path, Label]],
    content_prefix: str = DEFAULT_CONTENT_ID,
    sign: str | None = None,
    keep: int | None = None,
    events: Events | None = None,
    files_dir: str = "",
    gnupg_home: Path | None = None,
) -> PublishResult:
    """Make the daily and released streams list exactly these builds (manifest paths).

    For the build console: `daily` are the builds whose boot test passed,
    `released` the blessed ones (with their milestone label, `release` if not
    given). Builds already published keep their serial and files; versions of
    builds no longer listed leave the streams and their files are deleted.
    `files_dir`: a folder of the tree new versions' files go under (e.g. `images`,
    so that a server can tell them from its own pages); `gnupg_home`: the gpg home
    folder of the signing key (default: gpg's own).
    """
    releases = [Release(Path(p), Label.DAILY) for p in daily]
    for entry in released:
        path, milestone = entry if isinstance(entry, tuple) else (entry, Label.RELEASE)
        if milestone is Label.DAILY:
            raise UsageError("a released build needs a milestone label, not 'daily'")
        releases.append(Release(Path(path), milestone))
    return _update(
        repo,
        releases,
        content_prefix,
        sign,
        keep,
        events or null_events(),
        set(Stream),
        files_dir=files_dir,
        gnupg_home=gnupg_home,
    )


def resolve_sources(
    sources: Sequence[Path | Release], *, label: Label, serial: str | None
) -> list[Release]:
    """Group artifact and manifest paths into one `Release` per build."""
    if serial is not None and not SERIAL_RE.match(serial):
        raise UsageError(
            f"--serial {serial}: a serial is YYYYMMDD or YYYYMMDD.N",
            hint="for example 20261122 or 20261122.1 (so that serials sort by date)",
        )
    grouped: dict[Path, set[str] | None] = {}
    order: list[Path] = []
    releases: list[Release] = []
    for source in sources:
        if isinstance(source, Release):
            releases.append(source)
            continue
        path = Path(source)
        if not path.exists():
            raise UsageError(f"{path}: no such file", hint="give built artifacts or manifests")
        if path.name.endswith(".manifest.json"):
            manifest, files = path, None
        else:
            manifest, files = _manifest_of(path), {path.name}
        manifest = manifest.resolve()
        if manifest not in grouped:
            order.append(manifest)
            grouped[manifest] = files
        elif grouped[manifest] is not None:
            grouped[manifest] = None if files is None else grouped[manifest] | files  # type: ignore[operator]
    for manifest in order:
        chosen = grouped[manifest]
        releases.append(
            Release(manifest, label, serial, None if chosen is None else tuple(sorted(chosen)))
        )
    return releases


def _manifest_of(artifact: Path) -> Path:
    found = manifest_beside(artifact)
    if found is None:
        raise ArtifactError(
            f"{artifact}: no manifest beside it lists this file",
            hint="publish artifacts from an osbake output directory (with <image>.manifest.json), "
            "or give the manifest itself",
        )
    return found


# -- the update ------------------------------------------------------------------------------


@dataclass
class _Build:
    release: Release
    manifest: Manifest
    manifest_bytes: bytes
    manifest_sha256: str

    @property
    def directory(self) -> Path:
        return self.release.manifest.parent


@dataclass
class _State:
    """The tree being updated: its products files by content id, and what this run wrote."""

    repo: Path
    products: dict[str, Tree]
    events: Events
    files_dir: str = ""
    written: list[Path] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)


def _update(
    repo: Path,
    releases: list[Release],
    prefix: str,
    sign: str | None,
    keep: int | None,
    events: Events,
    exact: set[Stream] | None,
    *,
    files_dir: str = "",
    gnupg_home: Path | None = None,
) -> PublishResult:
    if keep is not None and keep < 1:
        raise UsageError(f"--keep {keep}: keep at least one version", hint="use --keep 1 or more")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", prefix):
        raise UsageError(
            f"--content-id {prefix}: use letters, digits, '.', '_' and '-'",
            hint="for example org.example.images",
        )
    if files_dir and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", files_dir):
        raise UsageError(f"files folder {files_dir!r}: use one plain folder name")
    builds = [_load_build(r) for r in releases]
    if sign:
        signing.check_key(sign, events, home=gnupg_home)
    elif (repo / INDEX_SJSON).exists():
        raise UsageError(
            f"{repo} is a signed tree: publishing without --sign would leave its signed "
            "index out of date",
            hint="pass --sign KEYID with the key that signs this tree",
        )
    repo.mkdir(parents=True, exist_ok=True)
    result = PublishResult(repo.resolve(), signed=bool(sign))
    with tree_lock(repo):
        state = _State(repo, read_streams(repo), events, files_dir)
        before = referenced(state.products)
        try:
            events.step("copy files")
            # oldest build first (each new version's changelog is against the one before
            # it); the result lists them in the order given
            order = sorted(range(len(builds)), key=lambda i: _finished(builds[i]))
            added = {i: _add_version(state, builds[i], prefix) for i in order}
            result.versions += [added[i] for i in range(len(builds))]
            if exact is not None:
                _drop_unlisted(state, prefix, exact, builds)
            if keep is not None:
                _prune(state, keep)
            events.step("write streams" + (" (signed)" if sign else ""))
            write_streams(
                repo,
                state.products,
                changed=state.changed,
                sign=sign,
                events=events,
                gnupg_home=gnupg_home,
            )
        except BaseException:
            for path in reversed(state.written):
                with contextlib.suppress(OSError):
                    path.unlink()
            _remove_empty_dirs(repo, [p.parent for p in state.written])
            raise
        # Files this run wrote for versions that were pruned at once count as well.
        written = {path for version in result.versions for path in version.paths}
        result.removed = delete_unreferenced(repo, before | written, referenced(state.products))
        pages.write_root_page(repo, state.products)
    return result


def _load_build(release: Release) -> _Build:
    path = release.manifest
    try:
        raw = path.read_bytes()
        manifest = Manifest.model_validate_json(raw)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the manifest ({exc.strerror})") from exc
    except ValueError as exc:
        raise ArtifactError(
            f"{path}: not an osbake manifest ({str(exc).splitlines()[0]})",
            hint="give an <image>.manifest.json written by 'osbake build'",
        ) from exc
    if release.files is not None:
        listed = {a.file for a in manifest.artifacts}
        for name in release.files:
            if name not in listed:
                raise ArtifactError(f"{path}: lists no artifact '{name}'")
    if not manifest.artifacts:
        raise ArtifactError(f"{path}: the manifest lists no artifacts", hint="build first")
    return _Build(release, manifest, raw, hashlib.sha256(raw).hexdigest())


def read_streams(repo: Path) -> dict[str, Tree]:
    index_path = repo / INDEX_JSON
    if not index_path.exists():
        return {}
    index = _read_json(index_path)
    products: dict[str, Tree] = {}
    for cid, entry in (index.get("index") or {}).items():
        path = repo / entry["path"]
        products[cid] = _read_json(path)
    return products


def _read_json(path: Path) -> Tree:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PublishError(
            f"{path}: cannot read this stream file ({exc})",
            hint="the tree is damaged; restore it from a mirror, or publish into a new --repo",
        ) from exc
    if not isinstance(data, dict):
        raise PublishError(f"{path}: not a simplestreams file")
    return data


def product_id(prefix: str, manifest: Manifest) -> str:
    name = manifest.name + (f"-{manifest.variant}" if manifest.variant else "")
    return f"{prefix}:{name}:{manifest.release}:{manifest.arch}"


def product_fields(manifest: Manifest) -> dict[str, Any]:
    number = DEBIAN_RELEASES.get(manifest.release) if manifest.distro == "debian" else None
    version = number or manifest.release
    aliases = [a for a in (number, manifest.release) if a]
    fields: dict[str, Any] = {
        "os": manifest.distro,
        "release": manifest.release,
        "release_codename": manifest.release.capitalize(),
        "release_title": f"{manifest.distro.capitalize()} {version}",
        "version": version,
        "arch": manifest.arch,
        "aliases": ",".join(dict.fromkeys(aliases)),
        "recipe": manifest.name,
    }
    if manifest.variant:
        fields["variant"] = manifest.variant
    return fields


def _serial_base(build: _Build) -> str:
    if build.release.serial:
        return build.release.serial
    return _finished(build).strftime("%Y%m%d")


def _finished(build: _Build) -> datetime:
    finished = build.manifest.build.finished
    try:
        when = datetime.fromisoformat(finished) if finished else datetime.now(UTC)
    except ValueError:
        when = datetime.now(UTC)
    return when.astimezone(UTC)


def _version_dir(build: _Build, serial: str, files_dir: str = "") -> str:
    m = build.manifest
    name = m.name + (f"-{m.variant}" if m.variant else "")
    return f"{files_dir + '/' if files_dir else ''}{name}/{m.release}/{m.arch}/{serial}"


def _find_version(state: _State, pid: str, sha: str) -> tuple[str, Tree] | None:
    """The version of this build already in some stream (same manifest), if any."""
    for tree in state.products.values():
        for vname, version in tree.get("products", {}).get(pid, {}).get("versions", {}).items():
            if version.get("manifest_sha256") == sha:
                return vname, version
    return None


def _choose_serial(state: _State, build: _Build, pid: str) -> str:
    taken = {
        vname
        for tree in state.products.values()
        for vname in tree.get("products", {}).get(pid, {}).get("versions", {})
    }
    base = _serial_base(build)

    def free(serial: str) -> bool:
        folder = state.repo / _version_dir(build, serial, state.files_dir)
        return serial not in taken and not folder.exists()

    if build.release.serial:
        if not free(base):
            raise UsageError(
                f"--serial {base}: {pid} already has a version {base} from another build",
                hint="leave out --serial to get the next free one (YYYYMMDD.N)",
            )
        return base
    candidates = [base] + [f"{base}.{n}" for n in range(1, 1000)]
    return next(s for s in candidates if free(s))


def _add_version(state: _State, build: _Build, prefix: str) -> PublishedVersion:
    m = build.manifest
    stream = stream_for(build.release.label)
    cid = content_id(prefix, stream)
    pid = product_id(prefix, m)
    tree = state.products.setdefault(cid, _new_products(cid))
    product = tree["products"].setdefault(pid, {"versions": {}})
    product.update(product_fields(m))

    existing = _find_version(state, pid, build.manifest_sha256)
    if existing is not None:
        serial, found = existing
        version: Tree = json.loads(json.dumps(found))
        notes = None
    else:
        serial = _choose_serial(state, build, pid)
        version = {"items": {}}
        notes = changelog.against_previous(
            state.repo, pid, product["versions"], serial, m, build.manifest_sha256, state.events
        )
    version.update(
        {
            "label": str(build.release.label),
            "pubname": f"{m.name}{'-' + m.variant if m.variant else ''}-{m.release}-{m.arch}-"
            f"{serial}",
            "manifest_sha256": build.manifest_sha256,
            "recipe_sha256": m.recipe_sha256,
            "osbake_version": m.osbake_version,
        }
    )
    if m.build.finished:
        version["build_finished"] = m.build.finished
    boot = m.recipe.get("boot")
    if isinstance(boot, list) and boot:
        version["boot"] = ",".join(str(b) for b in boot)
    directory = _version_dir(build, serial, state.files_dir)
    old_version = product["versions"].get(serial)
    new_items = _place_items(state, build, directory, version["items"], notes)
    if new_items or old_version != version:
        product["versions"][serial] = version
        state.changed.add(cid)
    paths = [item["path"] for item in version["items"].values()]
    state.events.log(f"{pid} {serial} ({build.release.label}): {len(paths)} files in {directory}")
    return PublishedVersion(cid, pid, serial, str(build.release.label), paths, bool(new_items))


def _new_products(cid: str) -> Tree:
    return {
        "content_id": cid,
        "datatype": DATATYPE,
        "format": PRODUCTS_FORMAT,
        "products": {},
    }


def _place_items(
    state: _State, build: _Build, directory: str, items: Tree, notes: changelog.Changelog | None
) -> list[str]:
    """Copy the build's files into `directory` (those not there yet), write its changelog
    (if any); add their items."""
    wanted = [
        a
        for a in build.manifest.artifacts
        if build.release.files is None or a.file in build.release.files
    ]
    added: list[str] = []
    for artifact in wanted:
        name = ftype_for(artifact.format)
        if name in items and items[name]["path"].endswith("/" + artifact.file):
            continue
        while name in items:  # two artifacts of one ftype: keep both
            name += "+"
        path = f"{directory}/{artifact.file}"
        digests = _copy_in(state, build.directory / artifact.file, path, artifact.size)
        if digests["sha256"] != artifact.sha256:
            raise ArtifactError(
                f"{build.directory / artifact.file}: its sha256 {digests['sha256']} does not "
                f"match the manifest ({artifact.sha256})",
                hint="the file was changed after the build; rebuild it",
            )
        items[name] = {"ftype": ftype_for(artifact.format), "path": path, **digests}
        added.append(name)
    manifest_path = f"{directory}/{build.release.manifest.name}"
    if "manifest" not in items:
        digests = _write_in(state, manifest_path, build.manifest_bytes)
        items["manifest"] = {"ftype": "manifest", "path": manifest_path, **digests}
        added.append("manifest")
    for name, data in (("changelog", notes.text), ("changelog.json", notes.json)) if notes else ():
        path = f"{directory}/{changelog.FILES[name]}"
        items[name] = {"ftype": name, "path": path, **_write_in(state, path, data)}
        added.append(name)
    if added:
        _write_pages(state, build, directory, items)
    return added


def _digests() -> dict[str, Any]:
    return {
        "md5": hashlib.md5(usedforsecurity=False),
        "sha256": hashlib.sha256(),
        "sha512": hashlib.sha512(),
    }


def _copy_in(state: _State, source: Path, path: str, expected: int) -> dict[str, Any]:
    target = state.repo / path
    if target.exists():
        raise PublishError(
            f"{target} exists already and published files never change",
            hint="remove it if it is left over from an interrupted publish",
        )
    try:
        size = source.stat().st_size
    except OSError as exc:
        raise ArtifactError(
            f"{source}: the manifest lists it but it is missing ({exc.strerror})",
            hint="publish from the build's output directory, with all its artifacts",
        ) from exc
    if size != expected:
        raise ArtifactError(
            f"{source}: {size} bytes, but the manifest says {expected}",
            hint="the file was changed after the build; rebuild it",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    hashes = _digests()
    done = 0
    with (
        _partial(state, target) as partial,
        source.open("rb") as src,
        partial.open("wb") as dst,
    ):
        for chunk in iter(lambda: src.read(CHUNK), b""):
            dst.write(chunk)
            for h in hashes.values():
                h.update(chunk)
            done += len(chunk)
            state.events.progress(f"copy {source.name}", done, size)
    return {"size": size, **{k: h.hexdigest() for k, h in hashes.items()}}


def _write_in(state: _State, path: str, data: bytes) -> dict[str, Any]:
    target = state.repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    with _partial(state, target) as partial:
        partial.write_bytes(data)
    hashes = _digests()
    for h in hashes.values():
        h.update(data)
    return {"size": len(data), **{k: h.hexdigest() for k, h in hashes.items()}}


@contextlib.contextmanager
def _partial(state: _State, target: Path) -> Iterator[Path]:
    """Write under a hidden temporary name; rename to `target` only when complete."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    partial = Path(name)
    try:
        yield partial
        os.chmod(partial, 0o644)
        os.replace(partial, target)
        state.written.append(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def _write_pages(state: _State, build: _Build, directory: str, items: Tree) -> None:
    base = state.repo / directory
    files = {k: v for k, v in items.items()}
    sums = pages.sha256sums(files, directory)
    for name, text in (
        ("SHA256SUMS", sums),
        ("README", pages.version_readme(build.manifest, directory, files)),
        ("index.html", pages.version_html(build.manifest, directory, files)),
    ):
        target = base / name
        with _partial(state, target) as partial:
            partial.write_text(text, encoding="utf-8")


def _drop_unlisted(state: _State, prefix: str, streams: set[Stream], builds: list[_Build]) -> None:
    wanted = {(content_id(prefix, stream_for(b.release.label)), b.manifest_sha256) for b in builds}
    for stream in streams:
        cid = content_id(prefix, stream)
        tree = state.products.get(cid)
        if tree is None:
            continue
        for pid, product in list(tree["products"].items()):
            for vname, version in list(product.get("versions", {}).items()):
                if (cid, version.get("manifest_sha256")) not in wanted:
                    del product["versions"][vname]
                    state.changed.add(cid)
            if not product.get("versions"):
                del tree["products"][pid]


def _prune(state: _State, keep: int) -> None:
    for cid, tree in state.products.items():
        for product in tree.get("products", {}).values():
            versions = product.get("versions", {})
            for old in sorted(versions, key=version_key, reverse=True)[keep:]:
                del versions[old]
                state.changed.add(cid)


def write_streams(
    repo: Path,
    products: dict[str, Tree],
    *,
    changed: set[str],
    sign: str | None = None,
    events: Events | None = None,
    gnupg_home: Path | None = None,
) -> None:
    """Write the products files (those `changed` or missing) and the index.

    Every file (and its signed copy) is staged first and then renamed in, index
    last; signing happens while staging, so a failure leaves the tree as it was.
    """
    events = events or null_events()
    now = timestamp()
    index: Tree = {"format": INDEX_FORMAT, "updated": now, "index": {}}
    staged: list[tuple[Path, Path]] = []
    repo.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=repo, prefix=".stage-") as tmp:
        stage = Path(tmp)
        for cid in sorted(products):
            tree = products[cid]
            path = products_path(cid)
            if cid in changed or not (repo / path).exists():
                tree["updated"] = now
                staged += _stage(stage, repo, path, tree, sign, events, gnupg_home)
            elif sign and not (repo / signed_path(path)).exists():
                staged += _stage(stage, repo, path, tree, sign, events, gnupg_home)
            index["index"][cid] = {
                "datatype": tree.get("datatype", DATATYPE),
                "format": PRODUCTS_FORMAT,
                "path": path,
                "products": sorted(tree.get("products", {})),
                "updated": tree.get("updated", now),
            }
        staged += _stage(
            stage,
            repo,
            INDEX_JSON,
            index,
            sign,
            events,
            gnupg_home,
            signed_copy=signed_index(index),
        )
        (repo / STREAMS_DIR).mkdir(parents=True, exist_ok=True)
        for source, target in staged:
            os.replace(source, target)


def _stage(
    stage: Path,
    repo: Path,
    path: str,
    data: Tree,
    sign: str | None,
    events: Events,
    gnupg_home: Path | None = None,
    *,
    signed_copy: Tree | None = None,
) -> list[tuple[Path, Path]]:
    """Write one stream file (and its .sjson) into `stage`; return (staged, final) pairs."""
    name = path.replace("/", "_")
    plain = stage / name
    plain.write_bytes(dump(data))
    plain.chmod(0o644)
    pairs: list[tuple[Path, Path]] = []
    if sign:
        to_sign = plain
        if signed_copy is not None:  # the index: its signed copy names the .sjson files
            to_sign = stage / f"{name}.to-sign"
            to_sign.write_bytes(dump(signed_copy))
        signed = stage / f"{name}.signed"
        signing.clearsign(to_sign, signed, sign, events, home=gnupg_home)
        signed.chmod(0o644)
        pairs.append((signed, repo / signed_path(path)))
    pairs.append((plain, repo / path))
    return pairs


def referenced(products: dict[str, Tree]) -> set[str]:
    return {
        item["path"]
        for tree in products.values()
        for product in tree.get("products", {}).values()
        for version in product.get("versions", {}).values()
        for item in version.get("items", {}).values()
        if isinstance(item.get("path"), str)
    }


def delete_unreferenced(repo: Path, before: set[str], after: set[str]) -> list[str]:
    """Delete files that versions referenced before this update and none does now."""
    removed: list[str] = []
    gone = sorted(before - after)
    live_dirs = {str(Path(p).parent) for p in after}
    for path in gone:
        with contextlib.suppress(FileNotFoundError):
            (repo / path).unlink()
            removed.append(path)
    for directory in sorted({str(Path(p).parent) for p in gone} - live_dirs):
        for page in pages.VERSION_PAGES:
            with contextlib.suppress(FileNotFoundError):
                (repo / directory / page).unlink()
    _remove_empty_dirs(repo, [repo / Path(p).parent for p in gone])
    return removed


def _remove_empty_dirs(repo: Path, dirs: list[Path]) -> None:
    root = repo.resolve()
    for start in sorted(set(dirs), key=lambda p: len(p.parts), reverse=True):
        current = start.resolve()
        while current != root and root in current.parents:
            try:
                current.rmdir()
            except OSError:
                break
            current = current.parent


@contextlib.contextmanager
def tree_lock(repo: Path) -> Iterator[None]:
    """One writer of streams at a time per tree: publishers (the console and the command
    line may race) and syncs into a mirror directory."""
    with (repo / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


__all__ = [
    "STREAMS_DIR",
    "PublishResult",
    "PublishedVersion",
    "Release",
    "delete_unreferenced",
    "product_fields",
    "product_id",
    "publish",
    "publish_streams",
    "read_streams",
    "referenced",
    "resolve_sources",
    "tree_lock",
    "write_streams",
]
