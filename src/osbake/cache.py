"""The step cache: a content-addressed store of step results.

Each entry is named by a step's content key (osbake.plan) and holds what that step
produced:

- tree steps: the step's changes to the root tree as an overlay layer (the bootstrap
  step's layer is the whole tree). A build stacks the layers of the steps it can
  reuse with overlayfs and writes the next step's changes into a new layer, so
  nothing is copied, neither when storing nor when resuming;
- the disk step: the assembled raw disk;
- output steps: the artifact.

Entries are written in a private folder and renamed into place only when complete,
so a killed build never leaves an entry a later build would use. Each records how
many files and bytes it holds (and an artifact its sha256), checked before use.
Builds hold a shared lock on the entries they use; `gc` removes least recently used
entries (and those that depend on them) down to a size budget, never one in use.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from osbake import sandbox
from osbake.disk.sizes import parse_size
from osbake.errors import OsbakeError
from osbake.workspace import LockedFolder, reap_folders

DEFAULT_BUDGET = "20GiB"
META = "meta.json"
# What the store itself records about an entry; the caller's metadata may not use these.
RESERVED_META = frozenset({"key", "files", "bytes", "used", "created"})


def _budget_from_environment() -> int:
    value = os.environ.get("OSBAKE_CACHE_MAX", DEFAULT_BUDGET)
    try:
        return parse_size(value)
    except ValueError:
        raise CacheError(
            f"OSBAKE_CACHE_MAX={value!r} is not a size",
            hint=f"set it to a size like 20GiB or 500MiB (default {DEFAULT_BUDGET})",
        ) from None


class CacheError(OsbakeError):
    """The step cache could not be used."""


@dataclass
class Entry:
    key: str
    path: Path
    meta: dict[str, Any]

    @property
    def layer(self) -> Path:
        return self.path / "layer"

    @property
    def extra(self) -> Path:
        """Files a step keeps besides the tree (GRUB's core image, the manifest, ...)."""
        return self.path / "extra"

    @property
    def step(self) -> str:
        return str(self.meta.get("step", "?"))

    @property
    def parent(self) -> str | None:
        parent = self.meta.get("parent")
        return str(parent) if parent else None

    @property
    def size(self) -> int:
        """Space on disk (sparse files count what they use)."""
        return int(self.meta.get("used", self.meta.get("bytes", 0)))

    @property
    def last_used(self) -> float:
        try:
            return (self.path / META).stat().st_mtime
        except OSError:
            return 0.0


@dataclass
class Writer:
    """An entry being written: a private folder that becomes the entry on commit."""

    store: Store
    key: str
    path: Path
    claim: LockedFolder
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> Path:
        return self.path / "layer"

    @property
    def work(self) -> Path:
        """overlayfs's own work folder (same file system as the layer)."""
        return self.path / "work"

    @property
    def extra(self) -> Path:
        return self.path / "extra"

    def commit(self, meta: dict[str, Any]) -> Entry:
        clash = RESERVED_META & set(meta)
        if clash:
            raise ValueError(f"cache entry metadata may not set {sorted(clash)}")
        sandbox.remove_tree(self.work)
        files, size, used = _count(self.path)
        record = {**meta, "key": self.key, "files": files, "bytes": size, "used": used}
        record["created"] = time.time()
        (self.path / f"{META}.tmp").write_text(json.dumps(record, indent=1))
        os.replace(self.path / f"{META}.tmp", self.path / META)
        _fsync_dir(self.path)
        final = self.store.entry_path(self.key)
        try:
            self.path.rename(final)
        except OSError:
            # Another build stored the same key first: theirs is as good as ours.
            sandbox.remove_tree(self.path)
        finally:
            self._unlock()
        entry = self.store.lookup(self.key)
        if entry is None:
            raise CacheError(f"the cache entry {self.key[:12]} vanished after it was written")
        return entry

    def abort(self) -> None:
        with contextlib.suppress(OsbakeError):
            sandbox.remove_tree(self.path)
        self._unlock()

    def _unlock(self) -> None:
        self.claim.release()


class Store:
    def __init__(self, root: Path, budget: int | None = None) -> None:
        self.root = root
        self.budget = budget if budget is not None else _budget_from_environment()
        self.entries_dir = root / "entries"
        self.tmp_dir = root / "tmp"
        self.locks_dir = root / "locks"
        for folder in (self.entries_dir, self.tmp_dir, self.locks_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._held: list[IO[str]] = []

    def entry_path(self, key: str) -> Path:
        return self.entries_dir / key

    # -- reading ------------------------------------------------------------------------

    def lookup(self, key: str, *, verify: bool = False) -> Entry | None:
        """The complete entry for `key`, or None. With `verify`, check its contents."""
        path = self.entry_path(key)
        try:
            meta = json.loads((path / META).read_text())
        except (OSError, ValueError):
            return None
        entry = Entry(key, path, meta)
        if verify and not self.verify(entry):
            return None
        return entry

    def verify(self, entry: Entry) -> bool:
        """Whether an entry still holds what it recorded (else it is dropped)."""
        files, size, _ = _count(entry.path)
        if files != entry.meta.get("files") or size != entry.meta.get("bytes"):
            self._drop(entry.path)
            return False
        return True

    def use(self, entry: Entry) -> bool:
        """Hold an entry for the rest of this build (gc skips it) and mark it used.

        False when a gc removed it before the hold was taken: hold first, then
        verify, and an entry that passed cannot vanish before it is used.
        """
        handle = (self.locks_dir / f"{entry.key}.lock").open("a")
        fcntl.flock(handle, fcntl.LOCK_SH)
        if not (entry.path / META).exists():
            handle.close()
            return False
        self._held.append(handle)
        with contextlib.suppress(OSError):
            os.utime(entry.path / META)
        return True

    def release(self) -> None:
        for handle in self._held:
            handle.close()
        self._held.clear()

    def entries(self) -> list[Entry]:
        found = []
        for path in sorted(self.entries_dir.iterdir()):
            entry = self.lookup(path.name)
            if entry is not None:
                found.append(entry)
        return found

    # -- writing ------------------------------------------------------------------------

    def begin(self, key: str, step: str) -> Writer:
        claim = LockedFolder(self.tmp_dir / f"{key[:16]}-{secrets.token_hex(4)}")
        for sub in ("layer", "work", "extra"):
            (claim.path / sub).mkdir()
        return Writer(self, key, claim.path, claim, {"step": step})

    # -- cleaning -----------------------------------------------------------------------

    def reap(self) -> int:
        """Remove what killed builds left half-written (unlocked temporary folders)."""
        return reap_folders(self.tmp_dir, self._drop)

    def gc(self, max_size: int | None = None) -> list[Entry]:
        """Evict least recently used entries until the store fits `max_size`."""
        self.reap()
        budget = self.budget if max_size is None else max_size
        entries = self.entries()
        total = sum(e.size for e in entries)
        children: dict[str, list[Entry]] = {}
        for entry in entries:
            if entry.parent:
                children.setdefault(entry.parent, []).append(entry)
        removed: list[Entry] = []
        gone: set[str] = set()
        for entry in sorted(entries, key=lambda e: e.last_used):
            if total <= budget:
                break
            if entry.key in gone:
                continue
            family = [entry, *self._descendants(entry, children)]
            with self._exclusive(family) as free:
                if not free:
                    continue  # in use by a running build
                for member in family:
                    if member.key in gone:
                        continue
                    self._drop(member.path)
                    gone.add(member.key)
                    total -= member.size
                    removed.append(member)
        return removed

    def _descendants(self, entry: Entry, children: dict[str, list[Entry]]) -> list[Entry]:
        found = []
        stack = list(children.get(entry.key, []))
        while stack:
            child = stack.pop()
            found.append(child)
            stack += children.get(child.key, [])
        return found

    @contextlib.contextmanager
    def _exclusive(self, family: list[Entry]) -> Iterator[bool]:
        handles = []
        try:
            for member in family:
                handle = (self.locks_dir / f"{member.key}.lock").open("a")
                handles.append(handle)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
            yield True
        finally:
            for handle in handles:
                handle.close()

    def _drop(self, path: Path) -> None:
        """Remove an entry: first out of sight (a rename), then from the disk."""
        if not path.exists():
            return
        doomed = self.tmp_dir / f"doomed-{secrets.token_hex(6)}"
        try:
            path.rename(doomed)
        except OSError:
            doomed = path
        with contextlib.suppress(OsbakeError):
            sandbox.remove_tree(doomed)


def _count(path: Path) -> tuple[int, int, int]:
    """Files, their bytes, and the space they take on disk, under an entry."""
    files = size = disk = 0
    for dirpath, dirnames, filenames in os.walk(path):
        if Path(dirpath) == path and "work" in dirnames:
            dirnames.remove("work")
        for name in filenames:
            if dirpath == str(path) and name in (META, f"{META}.tmp"):
                continue
            files += 1
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(dirpath, name))
                size += info.st_size
                disk += info.st_blocks * 512
    return files, size, disk


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_or_copy(source: Path, dest: Path) -> None:
    """Give `dest` the contents of `source`: a hard link where possible, else a copy."""
    dest.unlink(missing_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
