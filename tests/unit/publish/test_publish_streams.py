"""Stream helpers, filters and item selection."""

from __future__ import annotations

import pytest

from osbake.errors import UsageError
from osbake.publish.filters import parse_filters
from osbake.publish.streams import (
    Item,
    ftype_for,
    items,
    safe_path,
    signed_index,
    version_key,
)
from osbake.publish.sync import select

TREE = {
    "content_id": "x:daily:download",
    "format": "products:1.0",
    "products": {
        "x:img:bookworm:amd64": {
            "arch": "amd64",
            "release": "bookworm",
            "versions": {
                serial: {
                    "label": "daily",
                    "items": {
                        "disk1.img": {
                            "ftype": "disk1.img",
                            "path": f"a/{serial}/d.img",
                            "size": 10,
                            "sha256": "ab" * 32,
                            "md5": "cd" * 16,
                        },
                        "manifest": {
                            "ftype": "manifest",
                            "path": f"a/{serial}/m.json",
                            "size": 3,
                            "md5": "ef" * 16,
                        },
                    },
                }
                for serial in ("20261118", "20261120", "20261120.1")
            },
        },
        "x:img:bookworm:arm64": {
            "arch": "arm64",
            "versions": {
                "20261120": {
                    "items": {"disk1.img": {"ftype": "disk1.img", "path": "b/d.img", "size": 1}}
                }
            },
        },
    },
}


def test_ftypes() -> None:
    assert ftype_for("qcow2") == "disk1.img"
    assert ftype_for("raw.tar.xz") == "disk.raw.tar.xz"
    assert ftype_for("tar.xz") == "root.tar.xz"
    assert ftype_for("vhdx") == "disk.vhdx"
    assert ftype_for("squash fs!") == "squash-fs"
    assert ftype_for("///") == "file"


def test_serials_sort_naturally() -> None:
    serials = ["20261120.10", "20261120", "20261119", "20261120.2"]
    assert sorted(serials, key=version_key) == ["20261119", "20261120", "20261120.2", "20261120.10"]


def test_items_inherit_product_and_version_fields() -> None:
    item = next(i for i in items(TREE) if i.product.endswith("amd64"))
    assert isinstance(item, Item)
    fields = item.fields()
    assert fields["arch"] == "amd64"
    assert fields["label"] == "daily"
    assert fields["content_id"] == "x:daily:download"
    assert fields["version_name"] == item.version
    assert item.checksum() == ("sha256", "ab" * 32)  # strongest present wins over md5


def test_filters_and_max() -> None:
    chosen = select([TREE], parse_filters(["arch=amd64", "ftype!=manifest"]), 2)
    assert sorted(i.version for i in chosen) == ["20261120", "20261120.1"]
    chosen = select([TREE], parse_filters(["path~^b/"]), None)
    assert [i.product for i in chosen] == ["x:img:bookworm:arm64"]
    assert select([TREE], parse_filters(["nosuchkey=1"]), None) == []
    with pytest.raises(UsageError, match="key=value"):
        parse_filters(["arch"])
    with pytest.raises(UsageError, match="bad regular expression"):
        parse_filters(["arch~("])


def test_signed_index_points_at_signed_products() -> None:
    index = {"format": "index:1.0", "index": {"a": {"path": "streams/v1/a.json"}}}
    assert signed_index(index)["index"]["a"]["path"] == "streams/v1/a.sjson"
    assert index["index"]["a"]["path"] == "streams/v1/a.json"


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("a/b.img", True),
        ("/etc/passwd", False),
        ("a/../../x", False),
        ("a//b", False),
        ("", False),
        ("a\\b", False),
    ],
)
def test_safe_paths(path: str, ok: bool) -> None:
    assert safe_path(path) is ok
