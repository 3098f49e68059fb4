"""The seed a deploy puts in a partition at the end of the disk: loaded and checked.

A NoCloud seed (label cidata) or an OpenStack config drive (label config-2, also in
Ironic's gzipped and base64-encoded form), 64 MiB at most, as Ironic has it.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from pathlib import Path

from osbake.deploy.context import SeedVolume
from osbake.errors import UsageError
from osbake.events import Events

MAX_SEED_BYTES = 64 << 20  # Ironic's limit for a config drive partition
SEED_LABELS = {
    "config-2": "configdrive",
    "CONFIG-2": "configdrive",
    "cidata": "nocloud",
    "CIDATA": "nocloud",
}


def load_seed(path: Path, configdrive: bool, tmp: Path, events: Events) -> SeedVolume:
    from osbake.firstboot.volume import probe_volume, read_volume

    flag = "--configdrive" if configdrive else "--seed"
    if not path.is_file():
        raise UsageError(f"{flag} {path}: no such file", hint="make one with 'osbake seed'")
    if configdrive:
        path = _decode_ironic(path, tmp)
    size = path.stat().st_size
    if size > MAX_SEED_BYTES:
        raise UsageError(
            f"{flag} {path} is {size} bytes; a config partition holds 64 MiB at most",
            hint="keep large files out of the seed (fetch them from the network at boot)",
        )
    found = probe_volume(path)
    filesystem, label = found if found is not None else ("", None)
    if label is None or label not in SEED_LABELS:
        what = f"a {filesystem} volume labelled {label!r}" if found else "not a volume"
        raise UsageError(
            f"{flag} {path} is {what}; cloud-init looks for the label config-2 or cidata",
            hint="make the seed with 'osbake seed'",
        )
    kind = SEED_LABELS[label]
    if configdrive and kind != "configdrive":
        raise UsageError(
            f"--configdrive {path} is a NoCloud seed (label {label}), not a config drive",
            hint="pass it with --seed, or make a config drive: osbake seed --format configdrive",
        )
    files = read_volume(path)
    if kind == "configdrive":
        metas = [f for f in files if f.startswith("openstack/") and f.endswith("/meta_data.json")]
        if "openstack/latest/meta_data.json" not in files:
            raise UsageError(
                f"{flag} {path} has no openstack/latest/meta_data.json; cloud-init would not "
                "read it as a config drive",
                hint="make the seed with 'osbake seed --format configdrive'",
            )
        for name in metas:
            try:
                meta = json.loads(files[name])
            except ValueError as exc:
                raise UsageError(f"{flag} {path}: {name} is not valid JSON ({exc})") from None
            if not isinstance(meta, dict) or "uuid" not in meta:
                raise UsageError(
                    f"{flag} {path}: {name} has no 'uuid'; cloud-init refuses such a config drive"
                )
    else:
        missing = [f for f in ("user-data", "meta-data") if f not in files]
        if missing:
            raise UsageError(
                f"{flag} {path} lacks {' and '.join(missing)} at its root; "
                "cloud-init needs both for a NoCloud seed",
                hint="make the seed with 'osbake seed'",
            )
    return SeedVolume(path, size, filesystem, label)


def _seed_too_big(path: Path) -> UsageError:
    return UsageError(
        f"--configdrive {path} holds more than 64 MiB; a config partition holds 64 MiB at most",
        hint="keep large files out of the seed (fetch them from the network at boot)",
    )


def _decode_ironic(path: Path, tmp: Path) -> Path:
    """A config drive as Ironic takes it: plain, gzipped, or gzipped then base64-encoded."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head[:2] != b"\x1f\x8b" and head[:4] != b"H4sI":  # gzip, or base64 of its magic
        return path
    # Compressed, it is smaller than the volume (base64 adds a third): anything
    # bigger, or anything that inflates past the limit, is not a config drive.
    if path.stat().st_size > MAX_SEED_BYTES * 4 // 3 + 4096:
        raise _seed_too_big(path)
    data = path.read_bytes()
    if head[:4] == b"H4sI":
        try:
            data = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise UsageError(f"--configdrive {path}: bad base64 ({exc})") from None
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
    try:
        raw = inflate.decompress(data, MAX_SEED_BYTES + 1)
    except zlib.error as exc:
        raise UsageError(f"--configdrive {path}: cannot decompress it ({exc})") from None
    if len(raw) > MAX_SEED_BYTES:
        raise _seed_too_big(path)
    if not inflate.eof:
        raise UsageError(f"--configdrive {path}: cannot decompress it (the data ends early)")
    decoded = tmp / "configdrive.img"
    decoded.write_bytes(raw)
    return decoded
