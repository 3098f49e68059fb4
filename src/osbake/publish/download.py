"""Downloading one item: resumed from a partial file, checked, renamed only when whole.

The partial file is `.NAME.partial` beside the final name. A run that is cut off
leaves it; the next run hashes what it has and asks the server for the rest.
A file whose size or checksum does not match the stream is deleted, never kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from osbake.errors import PublishError, VerifyError
from osbake.events import Events
from osbake.publish.source import Source
from osbake.publish.streams import Item

CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def partial_path(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.partial"


def fetch(source: Source, item: Item, dest: Path, events: Events) -> int:
    """Download `item` to `dest`, checked against the stream; return the bytes transferred."""
    assert item.path is not None
    where = source.describe(item.path)
    expected = item.size
    checksum = item.checksum()
    if checksum is None:
        raise VerifyError(
            f"{where}: the stream gives no md5, sha256 or sha512 for this file",
            hint="osbake only takes files it can verify; filter this item out",
        )
    if expected is None:
        raise VerifyError(f"{where}: the stream gives no size for this file")
    algorithm, digest = checksum
    hasher = hashlib.new(algorithm)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(dest)
    have = partial.stat().st_size if partial.exists() else 0
    if have > expected:
        partial.unlink()
        have = 0
    if have:
        with partial.open("rb") as old:
            for chunk in iter(lambda: old.read(CHUNK), b""):
                hasher.update(chunk)
    stream, start = source.open(item.path, have)
    if start != have:  # the server cannot resume: start over
        hasher = hashlib.new(algorithm)
        have = 0
    transferred = 0
    name = item.path.rsplit("/", 1)[-1]
    # Writing and hashing a chunk overlap (both release the GIL): one thread writes.
    with (
        stream,
        partial.open("r+b" if have else "wb") as out,
        ThreadPoolExecutor(max_workers=1) as writer,
    ):
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
        raise PublishError(
            f"{where}: the download ended at {done} of {expected} bytes",
            hint="run the sync again: it resumes where it stopped",
        )
    got = hasher.hexdigest()
    if done != expected or got != digest:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
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
    os.chmod(partial, 0o644)
    os.replace(partial, dest)
    return transferred
