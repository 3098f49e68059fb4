"""LVM2's on-disk format as osbake writes it: label, PV header, metadata area, text."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from osbake.disk import lvm

MiB = 1024**2


def lvm_crc_bitwise(data: bytes) -> int:
    """LVM's calc_crc written out bit by bit (lib/misc/crc.c), to check the zlib shortcut."""
    crc = lvm.INITIAL_CRC
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc


def group(volumes: list[lvm.Volume] | None = None, pv_size: int = 64 * MiB) -> lvm.Group:
    return lvm.Group(
        name="vg0",
        id=lvm.lvm_id("vg"),
        pv_id=lvm.lvm_id("pv"),
        pv_size=pv_size,
        extent_size=4 * MiB,
        volumes=volumes
        if volumes is not None
        else [
            lvm.Volume("root", lvm.lvm_id("root"), 0, 5),
            lvm.Volume("var", lvm.lvm_id("var"), 5, 3),
        ],
    )


@pytest.mark.parametrize("data", [b"", b"LVM2", bytes(range(256)) * 3])
def test_crc_is_lvms(data: bytes) -> None:
    assert lvm.lvm_crc(data) == lvm_crc_bitwise(data)
    assert lvm.lvm_crc(b"") == lvm.INITIAL_CRC


def test_ids_are_lvms_shape_and_stable() -> None:
    raw = lvm.lvm_id("x")
    assert len(raw) == 32 and raw.isalnum() and raw == lvm.lvm_id("x") != lvm.lvm_id("y")
    assert [len(p) for p in lvm.format_id(raw).split("-")] == [6, 4, 4, 4, 4, 4, 6]


def test_mapper_names_double_hyphens() -> None:
    assert lvm.mapper_name("vg0", "root") == "vg0-root"
    assert lvm.mapper_name("my-vg", "l-v") == "my--vg-l--v"


def test_label_and_pv_header() -> None:
    area = lvm.pv_area(group(), "/dev/sda3")
    assert len(area) == lvm.PE_START and area[:512] == bytes(512)
    label = area[512:1024]
    assert label[:8] == b"LABELONE" and label[24:32] == b"LVM2 001"
    sector, crc, offset = struct.unpack_from("<QII", label, 8)
    assert (sector, offset) == (1, 32)
    assert crc == lvm.lvm_crc(label[20:])
    assert label[32:64] == lvm.lvm_id("pv").encode()
    fields = struct.unpack_from("<Q" + "Q" * 8 + "II" + "QQ", label, 64)
    size, data_off, data_size, z1, z2, mda_off, mda_size, z3, z4, version, flags, z5, z6 = fields
    assert size == 64 * MiB
    assert (data_off, data_size) == (lvm.PE_START, 0)
    assert (mda_off, mda_size) == (4096, lvm.PE_START - 4096)
    assert (version, flags) == (2, lvm.PV_EXT_USED)
    assert z1 == z2 == z3 == z4 == z5 == z6 == 0


def test_metadata_area_and_text() -> None:
    area = lvm.pv_area(group(), "/dev/sda3")
    mda = area[4096 : 4096 + 512]
    assert struct.unpack_from("<I", mda)[0] == lvm.lvm_crc(mda[4:])
    assert mda[4:20] == b" LVM2 x[5A%r0N*>"
    version, start, size = struct.unpack_from("<IQQ", mda, 20)
    assert (version, start, size) == (1, 4096, lvm.PE_START - 4096)
    offset, length, checksum, _ = struct.unpack_from("<QQII", mda, 40)
    text = area[4096 + offset : 4096 + offset + length]
    assert offset == 512 and text.endswith(b"\n\0") and checksum == lvm.lvm_crc(text)
    body = text.decode()
    assert body.startswith("vg0 {\n") and "extent_size = 8192\n" in body
    assert "dev_size = 131072\npe_start = 2048\npe_count = 15\n" in body
    assert 'var {\nid = "' in body and "extent_count = 3\n" in body and '"pv0", 5\n' in body
    assert body.count("{") == body.count("}")


def test_volumes_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ValueError, match="need 20 extents, the PV has 15"):
        lvm.pv_area(group([lvm.Volume("big", lvm.lvm_id("b"), 0, 20)]), "/dev/sda3")


def test_write_pv_writes_at_the_offset(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(b"\xff" * (3 * MiB))
    lvm.write_pv(image, MiB, group([], pv_size=6 * MiB), "/dev/vda3")
    data = image.read_bytes()
    assert data[:MiB] == b"\xff" * MiB
    assert data[MiB + 512 : MiB + 520] == b"LABELONE"
    assert data[2 * MiB :] == b"\xff" * MiB  # the extents are not touched


# -- reading it back ---------------------------------------------------------------------


def test_a_written_pv_reads_back_as_its_volumes() -> None:
    written = group()
    area = lvm.pv_area(written, "/dev/vda2")
    location = lvm.pv_metadata_location(area)
    assert location == (lvm.MDA_START, lvm.PE_START - lvm.MDA_START)
    text = lvm.metadata_from_area(area, *location)
    assert text is not None and text.startswith("vg0 {")
    assert lvm.logical_volumes(text) == [
        lvm.LogicalVolume("vg0", "root", written.volume_offset("root"), 5 * 4 * MiB),
        lvm.LogicalVolume("vg0", "var", written.volume_offset("var"), 3 * 4 * MiB),
    ]


def test_an_area_without_a_label_or_with_damaged_metadata_reads_as_nothing() -> None:
    assert lvm.pv_metadata_location(bytes(lvm.PE_START)) is None
    area = bytearray(lvm.pv_area(group(), "/dev/vda2"))
    text_at = lvm.MDA_START + lvm.MDA_HEADER_SIZE
    area[text_at + 3] ^= 0xFF  # the text's CRC no longer matches
    assert lvm.metadata_from_area(bytes(area), lvm.MDA_START, lvm.PE_START - lvm.MDA_START) is None
    area = bytearray(lvm.pv_area(group(), "/dev/vda2"))
    struct.pack_into("<Q", area, lvm.MDA_START + 48, 10 * MiB)  # a size past the area
    assert lvm.metadata_from_area(bytes(area), lvm.MDA_START, lvm.PE_START - lvm.MDA_START) is None


def test_metadata_as_lvm_itself_writes_it() -> None:
    """vgcreate/lvcreate's text: comments, several segments, a thin pool, tags."""
    text = """\
# Generated by LVM2 version 2.03.16(2) (2022-05-18): Mon Nov 30 02:21:41 2026
vg0 {
	id = "aaaaaa-bbbb-cccc-dddd-eeee-ffff-gggggg"
	seqno = 4
	status = ["RESIZEABLE", "READ", "WRITE"]
	extent_size = 8192		# 4 Megabytes
	physical_volumes {
		pv0 {
			id = "x"
			device = "/dev/loop0p2"	# Hint only
			pe_start = 2048
			pe_count = 100	# 400 Megabytes
		}
	}
	logical_volumes {
		root {
			status = ["READ", "WRITE", "VISIBLE"]
			tags = ["a", "b"]
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 50	# 200 Megabytes
				type = "striped"
				stripe_count = 1	# linear
				stripes = [
					"pv0", 10
				]
			}
		}
		split {
			segment_count = 2
			segment1 { start_extent = 0 extent_count = 1 type = "striped"
				stripe_count = 1 stripes = ["pv0", 0] }
			segment2 { start_extent = 1 extent_count = 1 type = "striped"
				stripe_count = 1 stripes = ["pv0", 5] }
		}
		pool { segment_count = 1 segment1 { type = "thin-pool" extent_count = 4 } }
	}
}
contents = "Text Format Volume Group"
version = 1
"""
    assert lvm.logical_volumes(text) == [
        lvm.LogicalVolume("vg0", "root", (2048 + 10 * 8192) * 512, 50 * 4 * MiB)
    ]


@pytest.mark.parametrize(
    "text", ["vg0 {", "vg0 { a = }", "}", "vg0 { = 1 }", "a {" * 40 + "}" * 40, "vg0 { ` }"]
)
def test_metadata_that_is_not_lvms_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        lvm.parse_metadata(text)
