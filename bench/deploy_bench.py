"""How fast `osbake deploy` writes a realistic disk image, step by step, against baselines.

    .venv/bin/python bench/deploy_bench.py [--workdir DIR] [--data-mib 900] [--loop]

Builds a 2 GiB GPT disk (127 MiB ESP, ext4 root holding --data-mib of real files
from /usr), converts it to qcow2 (compressed, as cloud images ship) and raw.tar.xz,
then deploys each onto an 8 GiB disk image file with --verify --grow and a config
drive, and prints a Markdown table. Baselines: `qemu-img convert -O raw` (what
Ironic runs) and `dd conv=sparse`. With --loop (root), also onto a loop device.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from osbake.deploy import deploy
from osbake.events import Events
from osbake.firstboot import make_seed

MIB = 1 << 20


def sh(*argv: str | Path, input: bytes | None = None) -> str:
    result = subprocess.run([str(a) for a in argv], input=input, capture_output=True, check=True)
    return result.stdout.decode()


def timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.monotonic()
    value = function(*args, **kwargs)
    return time.monotonic() - started, value


def build_disk(folder: Path, data_mib: int) -> Path:
    raw = folder / "disk.raw"
    sh("truncate", "-s", "2G", raw)
    script = (
        "label: gpt\n"
        "start=2048, size=127MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n"
        "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n"
    )
    sh("sfdisk", "--quiet", raw, input=script.encode())
    root_line = next(
        line for line in sh("sfdisk", "--dump", raw).splitlines() if line.startswith(f"{raw}2")
    )
    start = int(root_line.split("start=")[1].split(",")[0])
    sectors = int(root_line.split("size=")[1].split(",")[0])
    tree = folder / "tree"
    copied = 0
    for source in sorted(Path("/usr/lib/x86_64-linux-gnu").iterdir()) + sorted(
        Path("/usr/lib/python3").iterdir()
    ):
        if copied > data_mib * MIB:
            break
        if source.is_symlink() or not source.is_file():
            continue
        dest = tree / "usr" / "lib" / source.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        copied += dest.stat().st_size
    root = folder / "root.img"
    sh("truncate", "-s", str(sectors * 512), root)
    sh("mkfs.ext4", "-q", "-F", "-d", tree, root)
    esp = folder / "esp.img"
    sh("mkfs.vfat", "-C", esp, str(127 * 1024))
    sh("dd", f"if={esp}", f"of={raw}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
    sh(
        "dd",
        f"if={root}",
        f"of={raw}",
        "bs=1M",
        f"seek={start * 512 // MIB}",
        "conv=notrunc,sparse",
        "status=none",
    )
    shutil.rmtree(tree)
    root.unlink()
    esp.unlink()
    print(f"disk: 2 GiB, {copied // MIB} MiB of files in the root filesystem", file=sys.stderr)
    return raw


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def step_times(events: list[dict]) -> dict[str, float]:
    return {e["name"]: e["seconds"] for e in events if e["event"] == "result"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--data-mib", type=int, default=900)
    parser.add_argument("--loop", action="store_true", help="also deploy onto a loop device")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="osbake-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    raw = build_disk(work, args.data_mib)
    qcow2 = work / "disk.qcow2"
    seconds, _ = timed(sh, "qemu-img", "convert", "-c", "-O", "qcow2", raw, qcow2)
    print(f"qcow2 -c: {seconds:.1f}s, {qcow2.stat().st_size // MIB} MiB", file=sys.stderr)
    tar_xz = work / "disk.raw.tar.xz"
    seconds, _ = timed(
        sh, "tar", "-C", work, "-cSf", tar_xz, "--use-compress-program=xz -T2 -1", raw.name
    )
    print(f"raw.tar.xz: {seconds:.1f}s, {tar_xz.stat().st_size // MIB} MiB", file=sys.stderr)
    seed = make_seed(work / "seed.iso", format="configdrive", hostname="bench")

    rows = []
    for image in (raw, qcow2, tar_xz):
        target = work / "target.img"
        target.unlink(missing_ok=True)
        events: list[dict] = []
        total, report = timed(
            deploy,
            image,
            target,
            size=8 << 30,
            configdrive=seed,
            grow=True,
            verify=True,
            sha256=sha256(image),
            events=Events(events.append),
        )
        times = step_times(events)
        rows.append((image.name, "8 GiB file", total, times, report))
        target.unlink()

    if args.loop:
        backing = work / "loop.img"
        sh("truncate", "-s", "8G", backing)
        device = sh("losetup", "--find", "--show", backing).strip()
        try:
            events = []
            total, report = timed(
                deploy,
                qcow2,
                Path(device),
                configdrive=seed,
                grow=True,
                verify=True,
                sha256=sha256(qcow2),
                events=Events(events.append),
            )
            rows.append((qcow2.name, "8 GiB loop device", total, step_times(events), report))
        finally:
            subprocess.run(["losetup", "--detach", device], check=False)
            backing.unlink()

    baseline = work / "baseline.img"
    qemu, _ = timed(sh, "qemu-img", "convert", "-O", "raw", qcow2, baseline)
    baseline.unlink()
    dd, _ = timed(sh, "dd", f"if={raw}", f"of={baseline}", "bs=4M", "conv=sparse", "status=none")
    baseline.unlink()
    unxz, _ = timed(sh, "sh", "-c", f"xz -dc {tar_xz} > /dev/null")

    print("| image | target | total | checksum | write | verify | table | seed | grow |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, where, total, times, _ in rows:
        cells = [
            f"{times.get(s, 0):.2f}s"
            for s in ("checksum", "write", "verify", "table", "seed", "grow")
        ]
        print(f"| {name} | {where} | {total:.2f}s | " + " | ".join(cells) + " |")
    print()
    report = rows[0][4]
    print(f"data written: {report.written // MIB} MiB, zeros skipped: {report.skipped // MIB} MiB")
    print(f"baseline qemu-img convert -O raw (qcow2, no verify/grow): {qemu:.2f}s")
    print(f"baseline dd conv=sparse (raw, no verify/grow): {dd:.2f}s")
    print(f"baseline xz -dc of the raw.tar.xz to /dev/null: {unxz:.2f}s")
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
