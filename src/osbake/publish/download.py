"""Downloading one item: into a private partial file, checked, renamed only when whole.

The caller holds the destination's lock (`staging.hold`). The partial file is
`.NAME.TOKEN.partial` beside the final name, a name of this run's own; a run that is
cut off leaves it, and the next run (holding the lock, so nobody else writes it)
adopts it, hashes what it has and asks the server for the rest. A file whose size or
checksum does not match the stream is deleted, never kept; a server whose file is
shorter or longer than the stream says is refused at once, not resumed for ever.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from osbake.errors import PublishError, VerifyError
from osbake.events import Events
from osbake.publish import staging
from osbake.publish.source import Source
from osbake.publish.streams import CHECKSUMS, Item

CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def expectation(item: Item, where: str) -> tuple[int, str, str]:
    """The size and strongest checksum the stream gives for the item; refused without them."""
    checksum = item.checksum()
    if checksum is None:
        raise VerifyError(
            f"{where}: the stream gives no md5, sha256 or sha512 for this file",
            hint="osbake only takes files it can verify; filter this item out",
        )
    if item.size is None:
        raise VerifyError(f"{where}: the stream gives no size for this file")
    return item.size, checksum[0], checksum[1]


def verify_file(item: Item, path: Path, where: str | None = None) -> dict[str, str]:
    """Check a file against every checksum the stream gives, right before it is used.

    Returns the md5, sha256 and sha512 of the file (a cloud target sends them along).
    """
    where = where or str(path)
    expected, _, _ = expectation(item, where)
    hashes = {name: hashlib.new(name) for name in CHECKSUMS}
    size = 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            size += len(chunk)
            for hasher in hashes.values():
                hasher.update(chunk)
    digests = {name: hasher.hexdigest() for name, hasher in hashes.items()}
    if size != expected:
        raise VerifyError(
            f"{where}: size mismatch, refused: the file is {size} bytes, the stream says "
            f"{expected}; it was not used",
            hint="run the sync again: it downloads the file anew",
        )
    for name in CHECKSUMS:
        want = item.data.get(name)
        if isinstance(want, str) and want and want.lower() != digests[name]:
            raise VerifyError(
                f"{where}: checksum mismatch, refused: its {name} is {digests[name][:16]}..., "
                f"the stream says {want.lower()[:16]}...; it was not used",
                hint="run the sync again: it downloads the file anew",
            )
    return digests


def fetch(source: Source, item: Item, dest: Path, events: Events) -> int:
    """Download `item` to `dest`, checked against the stream; return the bytes transferred.

    Call with `dest`'s lock held. A file already at `dest` that matches the stream (a
    complete download of a run that was interrupted later) is kept: 0 bytes.
    """
    assert item.path is not None
    where = source.describe(item.path)
    expected, algorithm, digest = expectation(item, where)
    name = item.path.rsplit("/", 1)[-1]
    dest.parent.mkdir(parents=True, exist_ok=True)
    complete = dest.is_file() and dest.stat().st_size == expected
    if complete and file_digest(dest, algorithm) == digest:
        events.log(f"{name}: the complete download of an earlier run matches the stream")
        return 0
    partial = _adopt(dest, expected)
    try:
        transferred = _download(source, item, partial, expected, algorithm, digest, events)
    except VerifyError:
        staging.remove(partial)
        raise
    os.chmod(partial, 0o644)
    os.replace(partial, dest)
    return transferred


def _adopt(dest: Path, expected: int) -> Path:
    """This run's partial file, holding what the longest usable leftover holds."""
    mine = staging.private(dest, "partial")
    found = []
    for path in staging.leftovers(dest, "partial"):
        try:
            found.append((path.stat().st_size, path))
        except FileNotFoundError:
            continue
    usable = [(size, path) for size, path in found if size <= expected]
    best = max(usable)[1] if usable else None
    for _, path in found:
        if path != best:
            staging.remove(path)
    if best is not None:
        try:
            os.rename(best, mine)
        except FileNotFoundError:
            pass
    return mine


def _download(
    source: Source,
    item: Item,
    partial: Path,
    expected: int,
    algorithm: str,
    digest: str,
    events: Events,
) -> int:
    assert item.path is not None
    where = source.describe(item.path)
    name = item.path.rsplit("/", 1)[-1]
    hasher = hashlib.new(algorithm)
    have = partial.stat().st_size if partial.exists() else 0
    if have:
        with partial.open("rb") as old:
            for chunk in iter(lambda: old.read(CHUNK), b""):
                hasher.update(chunk)
    opened = source.open(item.path, have)
    if opened.start != have:  # the server cannot resume: start over
        hasher = hashlib.new(algorithm)
        have = 0
    transferred = 0
    # Writing and hashing a chunk overlap (both release the GIL): one thread writes.
    with (
        opened.stream as stream,
        partial.open("r+b" if have else "wb") as out,
        ThreadPoolExecutor(max_workers=1) as writer,
    ):
        if opened.total is not None and opened.total != expected:
            raise _size_mismatch(source, where, opened.total, expected)
        out.seek(have)
        out.truncate()
        done = have
        events.progress(name, done, expected)
        try:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                written = writer.submit(out.write, chunk)
                hasher.update(chunk)
                written.result()
                done += len(chunk)
                transferred += len(chunk)
                if done > expected:
                    break
                events.progress(name, done, expected)
        except OSError as exc:
            raise PublishError(
                f"{where}: the download was cut off at {done} of {expected} bytes ({exc})",
                hint="run the sync again: it resumes where it stopped",
            ) from None
    if done < expected:
        if have and not transferred and opened.total is None:
            # Resumed, and the server had nothing more: its file ends here.
            raise _size_mismatch(source, where, done, expected)
        raise PublishError(
            f"{where}: the download ended at {done} of {expected} bytes",
            hint="run the sync again: it resumes where it stopped",
        )
    got = hasher.hexdigest()
    if done != expected or got != digest:
        what = (
            f"its size is {done}+ bytes, the stream says {expected}"
            if done != expected
            else f"its {algorithm} is {got[:16]}..., the stream says {digest[:16]}..."
        )
        raise VerifyError(
            f"{where}: checksum mismatch, refused: {what}; the file is damaged or was changed "
            "after it was published, and it was not kept",
            hint="tell the publisher; sync with --keyring so that only signed checksums count",
        )
    return transferred


def _size_mismatch(source: Source, where: str, size: int, expected: int) -> VerifyError:
    whose = "the server's file" if source.url is not None else "the file"
    return VerifyError(
        f"{where}: size mismatch, refused: {whose} is {size} bytes, the stream says {expected}; "
        "it is truncated, damaged or was changed after it was published, and it was not kept",
        hint="tell the publisher; a sync cannot resume a file that is complete on the server",
    )
