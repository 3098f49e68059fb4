"""Sizes as people write them (512MiB, 2GiB, 25%) and as bytes, for the disk code.

The size grammar itself is osbake.formats' (one table of units); align_up and
align_down are osbake.extents'. Both are re-exported here for the disk modules.
"""

from __future__ import annotations

from osbake.extents import align_down, align_up
from osbake.formats import UNITS, GiB, MiB, format_size, parse_size

__all__ = ["UNITS", "GiB", "MiB", "align_down", "align_up", "format_size", "parse_size"]
