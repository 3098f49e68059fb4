"""Sizes as people write them (512MiB, 2GiB, 25%) and as bytes."""

from __future__ import annotations

import re

# The one align_up/align_down (osbake.extents), kept importable from here for the disk code.
from osbake.extents import align_down, align_up

__all__ = ["UNITS", "GiB", "MiB", "align_down", "align_up", "format_size", "parse_size"]

UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ti": 1024**4,
    "tib": 1024**4,
}
MiB = 1024**2
GiB = 1024**3


def parse_size(text: str) -> int:
    """'127MiB' -> 133169152. Raises ValueError for anything else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in UNITS:
        raise ValueError(f"'{text}' is not a size (use e.g. 512MiB, 2GiB)")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


def format_size(value: int) -> str:
    """Bytes for people: 1.5 GiB, 127 MiB, 4096 B."""
    for unit, factor in (("TiB", 1024**4), ("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(value) >= factor:
            amount = value / factor
            return f"{amount:.0f} {unit}" if amount == int(amount) else f"{amount:.1f} {unit}"
    return f"{value} B"
