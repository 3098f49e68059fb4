"""The fast-path installer: write a disk image to a disk, the way bare-metal provisioning does.

    report = deploy(Path("out/debian-cloud.qcow2"), Path("/dev/sdb"),
                    configdrive=Path("seed.iso"), grow=True, verify=True)

The story, each step a function of the context:

1. check     the image (format, size), its checksum source, the seed, the target
             (mounted? system disk? big enough?) - nothing is written yet
2. checksum  the image file against its manifest's sha256 (or --sha256)
3. write     stream the image's data to the target, zeros skipped, with a digest
4. verify    (--verify) read the target back: it must have the same digest
5. table     move the GPT backup header to the end of the target
6. seed      (--seed/--configdrive) a partition at the end of the disk holding the
             seed volume, as OpenStack Ironic does (64 MiB at most)
7. grow      (--grow) the root partition over the free space, then its filesystem
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from osbake.deploy.checks import check, check_size
from osbake.deploy.context import Context
from osbake.deploy.report import DeployReport, GrowReport, SeedPartition
from osbake.deploy.steps import (
    finish,
    fix_table,
    grow_root,
    verify_checksum,
    verify_written,
    write_image,
    write_seed_partition,
)
from osbake.deploy.target import Host
from osbake.errors import DeployError, OsbakeError, UsageError
from osbake.events import Events

__all__ = ["DeployReport", "GrowReport", "SeedPartition", "deploy"]


def deploy(
    image: Path,
    target: Path,
    *,
    seed: Path | None = None,
    configdrive: Path | None = None,
    grow: bool = False,
    verify: bool = False,
    force: bool = False,
    sha256: str | None = None,
    checksum: bool = True,
    size: int | None = None,
    raw: bool = False,
    events: Events | None = None,
    host: Host | None = None,
) -> DeployReport:
    """Write `image` (raw, qcow2 or raw.tar.xz/gz) to `target` (block device or file).

    seed:        a seed volume made by `osbake seed` (NoCloud or config drive)
    configdrive: an OpenStack config drive: a config-2 volume, or Ironic's gzipped
                 and base64-encoded form of one
    grow:        grow the root (last) partition and its ext4 filesystem to fill the disk
    verify:      read the written data back and compare it with what was written
    force:       write a target that is mounted or the system's own disk
    sha256:      the expected sha256 of the image file when it has no manifest
    checksum:    False writes an image that has neither manifest nor sha256
    size:        create the target file with this size when it does not exist
    raw:         write the image byte for byte even when it does not look like a disk
                 image (no partition table and no disk image header)
    """
    if seed is not None and configdrive is not None:
        raise UsageError("give either --seed or --configdrive, not both")
    check_size(size)
    events = events or Events()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="osbake-deploy-") as tmp:
        ctx = Context(
            image_path=image,
            target_path=target,
            seed_path=configdrive if configdrive is not None else seed,
            configdrive=configdrive is not None,
            grow=grow,
            verify=verify,
            force=force,
            sha256=sha256.lower() if sha256 else None,
            checksum=checksum,
            size=size,
            raw=raw,
            events=events,
            host=host or Host(),
            tmp=Path(tmp),
        )
        steps: list[tuple[str, str, Callable[[Context], None]]] = [
            ("check", "image, seed and target", check),
            ("checksum", "image file against its sha256", verify_checksum),
            ("write", "stream the image to the target", write_image),
        ]
        if verify:
            steps.append(("verify", "read the target back", verify_written))
        steps.append(("table", "GPT backup header to the end", fix_table))
        if ctx.seed_path is not None:
            steps.append(("seed", "config partition at the end", write_seed_partition))
        if grow:
            steps.append(("grow", "root partition and filesystem", grow_root))
        events.begin(image.name, [{"name": n, "describe": d} for n, d, _ in steps])
        current = ""
        try:
            for name, _, step in steps:
                current = name
                events.step(name)
                began = time.monotonic()
                step(ctx)
                events.result(name, time.monotonic() - began)
            finish(ctx)
        except OsbakeError as exc:
            events.finish(False, error=exc.message, step=current)
            raise
        except OSError as exc:
            error = _os_error(current, exc)
            events.finish(False, error=error.message, step=current)
            raise error from exc
        except BaseException:
            events.finish(False, error="interrupted", step=current)
            raise
        finally:
            if ctx.fd is not None:
                os.close(ctx.fd)
            if ctx.image is not None:
                ctx.image.close()
            if ctx.lock_fd is not None:
                assert ctx.target is not None
                if ctx.target.created and ctx.disk.exists():
                    ctx.disk.unlink()  # a new target file only appears complete
                os.close(ctx.lock_fd)
        assert ctx.report is not None
        ctx.report.seconds = round(time.monotonic() - started, 3)
        events.finish(True, artifacts=[str(target)])
        return ctx.report


def _os_error(step: str, exc: OSError) -> DeployError:
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return DeployError(
            f"{step}: no space left on the filesystem that holds the target{where}",
            hint="free some space there, or write to another place (a file target stays "
            "sparse, but its data and the --grow copy need room)",
        )
    if exc.errno == errno.EIO:
        return DeployError(
            f"{step}: the disk reported an I/O error{where}",
            hint="the disk may be failing; check dmesg and try another disk",
        )
    return DeployError(f"{step}: {exc.strerror or exc}{where}")
