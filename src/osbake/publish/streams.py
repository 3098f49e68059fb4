"""The simplestreams format: index:1.0 and products:1.0 trees, flattened items, ftypes.

A tree is plain JSON (dicts), read from anyone's mirror, so it is handled as
dicts rather than a strict model; `Item` is the flattened view of one file
(product, version and item fields merged, as the reference client does).
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

STREAMS_DIR = "streams/v1"
INDEX_JSON = f"{STREAMS_DIR}/index.json"
INDEX_SJSON = f"{STREAMS_DIR}/index.sjson"
INDEX_FORMAT = "index:1.0"
PRODUCTS_FORMAT = "products:1.0"
DATATYPE = "image-downloads"
DEFAULT_CONTENT_ID = "org.osbake"

# Strongest first: a download is checked against the first one the item has.
CHECKSUMS = ("sha512", "sha256", "md5")

Tree = dict[str, Any]


class Label(StrEnum):
    """The milestone of a published version; `daily` goes to the daily stream."""

    ALPHA = "alpha"
    BETA = "beta"
    RC = "rc"
    FINAL = "final"  # the console's name for a release milestone
    RELEASE = "release"
    DAILY = "daily"


class Stream(StrEnum):
    DAILY = "daily"
    RELEASED = "released"


def stream_for(label: Label) -> Stream:
    return Stream.DAILY if label is Label.DAILY else Stream.RELEASED


def content_id(prefix: str, stream: Stream) -> str:
    return f"{prefix}:{stream}:download"


def products_path(cid: str) -> str:
    return f"{STREAMS_DIR}/{cid}.json"


def signed_path(path: str) -> str:
    """streams/v1/x.json -> streams/v1/x.sjson (the reference client's convention)."""
    return path[: -len(".json")] + ".sjson" if path.endswith(".json") else path + ".sjson"


# osbake output format -> simplestreams ftype. Unknown formats keep their own name.
FTYPES: dict[str, str] = {
    "qcow2": "disk1.img",
    "raw": "disk.raw",
    "raw.tar.xz": "disk.raw.tar.xz",
    "raw.tar.gz": "disk.raw.tar.gz",
    "vmdk": "disk.vmdk",
    "vhd": "disk.vhd",
    "vhdx": "disk.vhdx",
    "tar": "root.tar.zst",  # osbake's `tar` output is the tarball in zstd
    "tar.zst": "root.tar.zst",
    "tar.xz": "root.tar.xz",
    "tar.gz": "root.tar.gz",
    "oci": "oci.tar",
    "iso": "iso",  # a hybrid live ISO (BIOS and UEFI; CD, USB stick or virtual CD-ROM)
    "manifest": "manifest",
}

# ftypes that are a disk image a cloud can take as it is, with their disk format.
DISK_FTYPES: dict[str, str] = {
    "disk1.img": "qcow2",
    "disk.raw": "raw",
    "disk.img": "raw",
    "uefi1.img": "qcow2",
    "disk.vmdk": "vmdk",
    "vmdk": "vmdk",
    "disk.vhd": "vhd",
    "disk.vhdx": "vhdx",
}


def ftype_for(fmt: str) -> str:
    known = FTYPES.get(fmt)
    if known is not None:
        return known
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "-", fmt).strip("-.")
    return cleaned or "file"


def timestamp() -> str:
    """The `updated` field: an RFC 2822 date, as the reference tools write it."""
    return email.utils.formatdate(usegmt=True)


def dump(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True, separators=(",", ": ")) + "\n").encode()


def signed_index(index: Tree) -> Tree:
    """The index as index.sjson carries it: each products path points to its .sjson."""
    copy: Tree = json.loads(json.dumps(index))
    for entry in copy.get("index", {}).values():
        path = entry.get("path")
        if isinstance(path, str) and path.endswith(".json"):
            entry["path"] = signed_path(path)
    return copy


def version_key(serial: str) -> tuple[int | str, ...]:
    """Sort serials naturally: 20261122 < 20261122.2 < 20261122.10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"[.]", serial))


@dataclass(frozen=True)
class Item:
    """One file of a stream, flattened: product, version and item fields merged."""

    content_id: str
    product: str
    version: str
    name: str
    data: dict[str, Any]

    @property
    def path(self) -> str | None:
        path = self.data.get("path")
        return path if isinstance(path, str) else None

    @property
    def size(self) -> int | None:
        try:
            return int(self.data["size"])
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def ftype(self) -> str:
        return str(self.data.get("ftype", self.name))

    def checksum(self) -> tuple[str, str] | None:
        """The strongest checksum the item carries, as (algorithm, hex digest)."""
        for algorithm in CHECKSUMS:
            value = self.data.get(algorithm)
            if isinstance(value, str) and value:
                return algorithm, value.lower()
        return None

    def fields(self) -> dict[str, str]:
        """What filters match on: every scalar field, plus the names of the levels."""
        flat = {k: str(v) for k, v in self.data.items() if isinstance(v, str | int | float)}
        flat.update(
            content_id=self.content_id,
            product_name=self.product,
            version_name=self.version,
            item_name=self.name,
        )
        return flat


def _scalars(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if isinstance(v, str | int | float | bool)}


def items(tree: Tree) -> Iterator[Item]:
    """Every item of a products:1.0 tree, with the fields it inherits."""
    top = _scalars(tree)
    cid = str(tree.get("content_id", ""))
    for pname, product in (tree.get("products") or {}).items():
        pdata = {**top, **_scalars(product)}
        for vname, version in (product.get("versions") or {}).items():
            vdata = {**pdata, **_scalars(version)}
            for iname, item in (version.get("items") or {}).items():
                yield Item(cid, pname, vname, iname, {**vdata, **_scalars(item)})


def safe_path(path: str) -> bool:
    """A path inside the tree: relative, no '..', no backslashes."""
    if not path or path.startswith("/") or "\\" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))
