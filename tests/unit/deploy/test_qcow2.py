"""The qcow2 reader on small images built here byte by byte (qemu-img checks it in integration)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from osbake.deploy.images import open_image
from osbake.deploy.qcow2 import L2_COMPRESSED, L2_ZERO
from osbake.errors import ArtifactError

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS


def build_qcow2(
    path: Path,
    size: int,
    clusters: dict[int, bytes | str],
    *,
    version: int = 3,
    backing: str = "",
    crypt: int = 0,
    incompatible: int = 0,
    compression_type: int = 0,
) -> None:
    """A qcow2 file: header in cluster 0, L1 in cluster 1, one L2 in cluster 2, data after.

    clusters maps a guest cluster index to its data, "zero" (zero flag), or
    "deflate:<data>" for a compressed cluster.
    """
    l2 = [0] * (CLUSTER // 8)
    data = bytearray()
    next_host = 3 * CLUSTER
    for index, content in sorted(clusters.items()):
        if content == "zero":
            l2[index] = L2_ZERO
            continue
        if isinstance(content, str) and content.startswith("deflate:"):
            raw = content[len("deflate:") :].encode().ljust(CLUSTER, b"\0")
            packer = zlib.compressobj(9, zlib.DEFLATED, -12)
            compressed = packer.compress(raw) + packer.flush()
            host = next_host + len(data)
            sectors = (host % 512 + len(compressed) + 511) // 512 - 1
            shift = 62 - (CLUSTER_BITS - 8)
            l2[index] = L2_COMPRESSED | (sectors << shift) | host
            data += compressed
            data += b"\0" * (-len(data) % 512)
            continue
        assert isinstance(content, bytes)
        l2[index] = (1 << 63) | (next_host + len(data))
        data += content.ljust(CLUSTER, b"\0")
    header = struct.pack(
        ">4sIQIIQIIQQIIQ",
        b"QFI\xfb",
        version,
        (CLUSTER - 512) if backing else 0,
        len(backing),
        CLUSTER_BITS,
        size,
        crypt,
        1,
        CLUSTER,
        0,
        0,
        0,
        0,
    )
    if version == 3:
        header += struct.pack(">QQQII", incompatible, 0, 0, 4, 112)
        header += bytes([compression_type]) + b"\0" * 7
    first = bytearray(header.ljust(CLUSTER, b"\0"))
    if backing:
        first[CLUSTER - 512 : CLUSTER - 512 + len(backing)] = backing.encode()
    l1 = struct.pack(">Q", (1 << 63) | 2 * CLUSTER).ljust(CLUSTER, b"\0")
    l2_bytes = struct.pack(f">{len(l2)}Q", *l2)
    path.write_bytes(bytes(first) + l1 + l2_bytes + bytes(data))


def content(path: Path) -> bytes:
    source = open_image(path)
    out = bytearray(source.size)
    for offset, data in source.chunks():
        out[offset : offset + len(data)] = data
    return bytes(out)


def test_plain_zero_and_compressed_clusters(tmp_path: Path) -> None:
    image = tmp_path / "a.qcow2"
    build_qcow2(
        image,
        5 * CLUSTER,
        {0: b"first", 1: b"second", 2: "zero", 3: "deflate:packed"},
    )
    source = open_image(image)
    assert source.format == "qcow2"
    assert source.size == 5 * CLUSTER
    data = content(image)
    assert data[:5] == b"first"
    assert data[CLUSTER : CLUSTER + 6] == b"second"
    assert data[2 * CLUSTER : 3 * CLUSTER] == bytes(CLUSTER)
    assert data[3 * CLUSTER : 3 * CLUSTER + 6] == b"packed"
    assert data[4 * CLUSTER :] == bytes(CLUSTER)


def test_contiguous_clusters_are_read_in_one_run(tmp_path: Path) -> None:
    image = tmp_path / "a.qcow2"
    build_qcow2(image, 4 * CLUSTER, {0: b"a", 1: b"b", 3: b"d"})
    runs = [(offset, len(data)) for offset, data in open_image(image).chunks()]
    assert runs == [(0, 2 * CLUSTER), (3 * CLUSTER, CLUSTER)]


def test_size_not_a_multiple_of_the_cluster(tmp_path: Path) -> None:
    image = tmp_path / "a.qcow2"
    build_qcow2(image, CLUSTER + 1000, {1: b"x" * CLUSTER})
    data = content(image)
    assert len(data) == CLUSTER + 1000
    assert data[CLUSTER:] == b"x" * 1000


def test_version_2(tmp_path: Path) -> None:
    image = tmp_path / "a.qcow2"
    build_qcow2(image, 2 * CLUSTER, {1: b"v2"}, version=2)
    assert content(image)[CLUSTER : CLUSTER + 2] == b"v2"


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    image = tmp_path / "a.qcow2"
    build_qcow2(image, 4 * CLUSTER, {0: b"a", 1: b"b", 2: b"c"})
    raw = image.read_bytes()
    image.write_bytes(raw[: len(raw) - CLUSTER // 2])
    with pytest.raises(ArtifactError, match="truncated"):
        content(image)


def test_corrupt_compressed_cluster(tmp_path: Path) -> None:
    image = tmp_path / "a.qcow2"
    build_qcow2(image, 2 * CLUSTER, {0: "deflate:hello"})
    raw = bytearray(image.read_bytes())
    raw[3 * CLUSTER : 3 * CLUSTER + 8] = b"\xff" * 8
    image.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="corrupt"):
        content(image)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backing": "base.raw"}, "backing file"),
        ({"crypt": 1}, "encrypted"),
        ({"incompatible": 2}, "marked corrupt"),
        ({"incompatible": 4}, "external file"),
        ({"incompatible": 1 << 40}, "does not know"),
        ({"compression_type": 7}, "unknown cluster compression"),
    ],
)
def test_unsupported_images_are_refused(tmp_path: Path, options: dict, message: str) -> None:
    image = tmp_path / "a.qcow2"
    build_qcow2(image, CLUSTER, {}, **options)
    with pytest.raises(ArtifactError, match=message) as caught:
        open_image(image)
    assert caught.value.hint


@pytest.mark.real_subprocess
def test_zstd_clusters_match_qemu_img(tmp_path: Path) -> None:
    """osbake writes zstd-compressed qcow2 by default: the reader must agree with QEMU."""
    import os
    import subprocess

    raw = tmp_path / "disk.raw"
    data = (b"osbake" * 20000 + os.urandom(70000)) * 8
    raw.write_bytes(data + bytes(3 * CLUSTER))
    image = tmp_path / "z.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-c",
            "-o",
            "compression_type=zstd",
            str(raw),
            str(image),
        ],
        check=True,
    )
    assert content(image)[: len(data)] == data
