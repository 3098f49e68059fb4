"""A foreign build's initramfs is compressed by the host, not under emulation.

mkinitramfs (initramfs-tools) runs the image's own programs; for another
architecture every one of them runs through QEMU's user-mode emulator, and its
compressor (zstd -9 by default in Debian 12) is the one long CPU-bound task among
them. While the initramfs is made, the image's /usr/bin/zstd is covered by a small
script: given mkinitramfs's archive it keeps a copy and its arguments and writes a
marker instead. The host then runs its own zstd with the same arguments on the
archive and puts the result where the marker is. The image's files and
configuration are not changed, and the result is the file mkinitramfs would have
written (a zstd stream of the same archive, made with the same options).

Anything else that calls zstd meanwhile (decompressing modules) gets the image's
own zstd.
"""

from __future__ import annotations

import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from osbake import run as runner
from osbake import sandbox
from osbake.errors import DistroError
from osbake.events import Events

INSIDE = "/run/osbake/initramfs"
# Options mkinitramfs gives zstd (-q, a level, -T threads, --long ...): nothing else
# is passed on to the host's zstd.
SAFE_OPTION = re.compile(r"-(q|[0-9]{1,2}|T[0-9]{1,3}|-ultra|-long(=[0-9]{1,2})?)")

STAND_IN = """#!/bin/sh
# osbake: the host compresses this build's initramfs (osbake.distros.host_initramfs).
compressing=
for arg; do
    case "$arg" in -c) compressing=1 ;; -d|--decompress|-t|--test) compressing= ; break ;; esac
    last=$arg
done
if [ -z "$compressing" ] || [ ! -f "$last" ]; then
    exec {inside}/zstd.image "$@"
fi
n=0
while [ -e "{inside}/$n.cpio" ]; do n=$((n + 1)); done
cp "$last" "{inside}/$n.cpio"
printf '%s\\n' "$@" > "{inside}/$n.args"
printf '%s' "{marker}$n."
"""


@dataclass
class Deferred:
    """The folder the stand-in writes into, and the marker it writes."""

    folder: Path
    marker: str

    def binds(self) -> list[sandbox.Bind]:
        return [
            sandbox.Bind(self.folder, INSIDE, writable=True),
            sandbox.Bind(self.folder / "zstd", "/usr/bin/zstd"),
        ]


def prepare(tree: Path, work: Path) -> Deferred | None:
    """Get the stand-in ready (None: the image has no zstd, nothing to defer)."""
    image_zstd = tree / "usr" / "bin" / "zstd"
    if not image_zstd.is_file() or image_zstd.is_symlink() or not runner.exists("zstd"):
        return None
    folder = work / "host-initramfs"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    marker = f"OSBAKE-HOST-COMPRESSES-{secrets.token_hex(16)}-"
    shutil.copy2(image_zstd, folder / "zstd.image")
    stand_in = folder / "zstd"
    stand_in.write_text(STAND_IN.replace("{inside}", INSIDE).replace("{marker}", marker))
    stand_in.chmod(0o755)
    return Deferred(folder, marker)


def finish(deferred: Deferred, tree: Path, events: Events | None = None) -> int:
    """Compress each kept archive on the host into its initramfs; return how many."""
    done = 0
    for initrd in sorted((tree / "boot").glob("initrd.img-*")):
        if initrd.is_symlink() or not initrd.is_file():
            continue
        data = initrd.read_bytes()
        found = re.search(re.escape(deferred.marker.encode()) + rb"([0-9]+)\.", data)
        if found is None:
            continue
        number = found.group(1).decode()
        archive = deferred.folder / f"{number}.cpio"
        args = (deferred.folder / f"{number}.args").read_text().splitlines()
        options = [a for a in args[:-1] if a != "-c"]
        bad = [a for a in options if not SAFE_OPTION.fullmatch(a)]
        if bad:
            raise DistroError(
                f"mkinitramfs asked zstd for options osbake does not pass on: {' '.join(bad)}",
                hint="check COMPRESSLEVEL in the image's /etc/initramfs-tools",
            )
        compressed = deferred.folder / f"{number}.cpio.zst"
        runner.run(
            ["zstd", *options, "-f", "-o", str(compressed), str(archive)],
            events=events,
        )
        partial = initrd.with_name(f".{initrd.name}.osbake")
        with partial.open("wb") as handle:
            handle.write(data[: found.start()])
            handle.write(compressed.read_bytes())
            handle.write(data[found.end() :])
        shutil.copymode(initrd, partial)
        partial.replace(initrd)
        done += 1
    shutil.rmtree(deferred.folder, ignore_errors=True)
    return done
