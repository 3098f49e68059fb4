"""Reading a simplestreams tree, ours or anyone's: a directory or an http(s)/file URL.

With a keyring every stream file is read from its signed .sjson and checked with
gpgv; an unsigned or badly signed file is refused. Item files are opened at an
offset so that downloads resume.
"""

from __future__ import annotations

import io
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO, NamedTuple

from osbake.errors import PublishError, VerifyError
from osbake.events import Events, null_events
from osbake.publish import signing
from osbake.publish.streams import (
    INDEX_FORMAT,
    INDEX_JSON,
    INDEX_SJSON,
    PRODUCTS_FORMAT,
    Tree,
    safe_path,
    signed_path,
)

_STREAM_PATH_RE = re.compile(r"streams/v1/[^/]+\.s?json$")
USER_AGENT = "osbake-sync"
STREAM_FILE_LIMIT = 256 << 20  # the largest public products files are tens of MiB


class NotFound(PublishError):
    """The file is not in the tree."""


class Opened(NamedTuple):
    """A file being read: the stream, the offset it starts at, the file's size if known."""

    stream: BinaryIO
    start: int
    total: int | None


_CONTENT_RANGE_RE = re.compile(r"^bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)$")


def _range_start(header: str | None) -> int | None:
    found = _CONTENT_RANGE_RE.match((header or "").strip())
    return int(found[1]) if found and found[1] else None


def _range_total(header: str | None) -> int | None:
    found = _CONTENT_RANGE_RE.match((header or "").strip())
    return int(found[2]) if found and found[2] != "*" else None


class Source:
    """A tree to read. `location` is its root, or the URL of an index or products file."""

    def __init__(
        self,
        location: str,
        *,
        keyring: Path | None = None,
        events: Events | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.location = location
        self.keyring = keyring
        self.events = events or null_events()
        self.timeout = timeout
        base, start = location, None
        found = _STREAM_PATH_RE.search(location)
        if found is not None:
            base, start = location[: found.start()], location[found.start() :]
        parsed = urllib.parse.urlparse(base)
        self.url: str | None = None
        self.dir: Path | None = None
        if parsed.scheme in ("http", "https"):
            self.url = base if base.endswith("/") else base + "/"
        elif parsed.scheme == "file":
            self.dir = Path(urllib.parse.unquote(parsed.path))
        elif parsed.scheme and len(parsed.scheme) > 1:
            raise PublishError(
                f"{location}: osbake reads trees over http, https and file URLs, or from a "
                "directory",
                hint="give the tree's root URL, e.g. https://images.example.org/",
            )
        else:
            self.dir = Path(base or ".")
        if self.dir is not None and not self.dir.is_dir():
            raise PublishError(
                f"{location}: no such directory",
                hint="give a simplestreams tree's root directory or URL",
            )
        if start is None:
            start = INDEX_SJSON if keyring else INDEX_JSON
        elif keyring and start.endswith(".json"):
            start = signed_path(start)
        self.start = start

    # -- raw access --------------------------------------------------------------------------

    def describe(self, path: str) -> str:
        if self.url is not None:
            return self.url + urllib.parse.quote(path)
        assert self.dir is not None
        return str(self.dir / path)

    def open(self, path: str, offset: int = 0) -> Opened:
        """A stream of the file from `offset` if the server can, where it really starts, and
        the whole file's size when the server says it (a directory always does)."""
        if not safe_path(path):
            raise VerifyError(
                f"the stream names an unsafe path '{path}'",
                hint="a path must stay inside the tree; do not use this stream",
            )
        if self.dir is not None:
            try:
                handle = (self.dir / path).open("rb")
            except (FileNotFoundError, IsADirectoryError):
                raise NotFound(f"{self.describe(path)}: not found") from None
            total = os.fstat(handle.fileno()).st_size
            handle.seek(min(offset, total))
            return Opened(handle, min(offset, total), total)
        request = urllib.request.Request(self.describe(path), headers={"User-Agent": USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise NotFound(f"{self.describe(path)}: not found (HTTP 404)") from None
            if exc.code == 416 and offset:
                # Nothing from `offset` on: the server's file is that long at most.
                longest = _range_total(exc.headers.get("Content-Range"))
                if longest is None:
                    return self.open(path, 0)
                return Opened(io.BytesIO(b""), offset, longest)
            raise PublishError(f"{self.describe(path)}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PublishError(
                f"{self.describe(path)}: cannot download ({reason})",
                hint="check the URL and that the server is reachable",
            ) from None
        if response.status == 206:
            content_range = response.headers.get("Content-Range")
            first = _range_start(content_range)
            if first != offset:  # not the range asked for: start over
                response.close()
                return self.open(path, 0)
            return Opened(response, offset, _range_total(content_range))
        length = response.headers.get("Content-Length")
        known = length and length.isdigit() and not response.headers.get("Content-Encoding")
        return Opened(response, 0, int(length) if known else None)

    def read(self, path: str) -> bytes:
        """A stream file, whole (bounded: a stream file is never that large)."""
        with self.open(path).stream as stream:
            data = stream.read(STREAM_FILE_LIMIT + 1)
        if len(data) > STREAM_FILE_LIMIT:
            raise PublishError(
                f"{self.describe(path)}: larger than {STREAM_FILE_LIMIT >> 20} MiB, "
                "not a stream file osbake reads",
                hint="check the URL: it should lead to a simplestreams index or products file",
            )
        return data

    # -- stream files ------------------------------------------------------------------------

    def load(self, path: str) -> Tree:
        """A stream file, checked against the keyring if there is one."""
        if self.keyring is not None:
            if path.endswith(".json"):
                path = signed_path(path)
            payload = signing.verify(
                self.read(path), self.keyring, self.describe(path), self.events
            )
        else:
            try:
                payload = self.read(path)
            except NotFound:
                if not path.endswith(".json"):
                    raise
                path = signed_path(path)
                payload = strip_clearsign(self.read(path))
            if payload.lstrip().startswith(signing.SIGNED_HEADER):
                payload = strip_clearsign(payload)
        try:
            data = json.loads(payload)
        except ValueError as exc:
            raise PublishError(f"{self.describe(path)}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise PublishError(f"{self.describe(path)}: not a simplestreams file")
        return data

    def streams(self) -> list[Tree]:
        """Every products tree the start file leads to."""
        first = self.load(self.start)
        fmt = first.get("format")
        if fmt == PRODUCTS_FORMAT:
            return [first]
        if fmt != INDEX_FORMAT:
            raise PublishError(
                f"{self.describe(self.start)}: format '{fmt}' is neither index:1.0 nor products:1.0"
            )
        trees = []
        for cid, entry in sorted((first.get("index") or {}).items()):
            if entry.get("format", PRODUCTS_FORMAT) != PRODUCTS_FORMAT or not entry.get("path"):
                continue
            if not safe_path(entry["path"]):
                raise VerifyError(f"the index names an unsafe path '{entry['path']}' for {cid}")
            tree = self.load(entry["path"])
            tree.setdefault("content_id", cid)
            trees.append(tree)
        return trees


def strip_clearsign(content: bytes) -> bytes:
    """The text of a clearsigned message, unchecked (only when no keyring was given)."""
    lines = content.decode("utf-8").splitlines()
    body: list[str] = []
    mode = "start"
    for line in lines:
        if mode == "start":
            mode = "header" if line.startswith("-----BEGIN PGP SIGNED MESSAGE") else "start"
        elif mode == "header":
            mode = "body" if line == "" else "header"
        elif mode == "body":
            if line.startswith("-----BEGIN PGP SIGNATURE"):
                break
            body.append(line[2:] if line.startswith("- ") else line)
    return ("\n".join(body) + "\n").encode()
