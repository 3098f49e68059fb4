"""The checksums osbake recomputes when it pins disk format headers."""

from __future__ import annotations

from osbake.outputs import pinning


def test_crc32c_is_castagnoli() -> None:
    # The check value of CRC-32C (RFC 3720, iSCSI).
    assert pinning.crc32c(b"123456789") == 0xE3069283
    assert pinning.crc32c(b"") == 0


def test_the_vhd_checksum_leaves_out_its_own_field() -> None:
    footer = bytearray(512)
    footer[0:8] = pinning.VHD_COOKIE
    before = pinning.vhd_checksum(bytes(footer))
    footer[64:68] = b"\xff\xff\xff\xff"
    assert pinning.vhd_checksum(bytes(footer)) == before
    assert before == ~sum(pinning.VHD_COOKIE) & 0xFFFFFFFF
