"""How fast osbake builds the cloud image, against the floor, and how fast it boots.

    .venv/bin/python bench/build_bench.py [--recipe examples/debian-cloud.yaml]
        [--workdir DIR] [--write docs/benchmarks.md] [--no-boot] [--no-floor]

Run as root on a quiet machine. In one run, for one recipe built to a compressed
qcow2 (the recipe's other outputs are dropped):

  cold       osbake with an empty cache (step cache and package pool)
  no change  the same build again
  run line   after changing one `run:` line
  package    after adding one package (`tree`)
  floor      mmdebstrap installing the cold image's package set into a directory,
             mkfs.ext4 -d of that tree, `qemu-img convert -c` of the file system

then boots the cold image under `osbake boot` with a NoCloud seed and reads how
long cloud-init took to report that it is done. Each build's peak memory (osbake's
and its largest tool's, per step, from the manifest) goes into the table. With
--write, the "## Build" section of the Markdown file is replaced by the results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from osbake.distros import get_distro
from osbake.recipe import load

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
DONE = r"Cloud-init v\. \S+ finished at"
UP = re.compile(r"Up ([0-9.]+) seconds")


@dataclass
class Run:
    name: str
    seconds: float
    peak_kib: int  # the whole build: osbake and everything it started
    manifest: dict[str, Any] = field(default_factory=dict)
    qcow2: Path | None = None


def osbake(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "osbake", *map(str, args)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait(proc: subprocess.Popen[bytes], what: str) -> int:
    """Wait for a command; return its peak memory (KiB), its own and its children's."""
    assert proc.stderr is not None
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{what} failed ({proc.returncode}):\n{err.decode(errors='replace')[-3000:]}")
    return usage.ru_maxrss


def build(name: str, recipe: Path, out: Path, cache: Path) -> Run:
    print(f"-- {name}", file=sys.stderr, flush=True)
    started = time.monotonic()
    proc = osbake(
        "build", recipe, "-o", out, "--log", f"{out}.log", env={"OSBAKE_CACHE_DIR": str(cache)}
    )
    peak = wait(proc, f"osbake build ({name})")
    seconds = time.monotonic() - started
    manifest = json.loads(next(out.glob("*.manifest.json")).read_text())
    qcow2 = next(out.glob("*.qcow2"))
    print(f"   {seconds:.1f} s", file=sys.stderr, flush=True)
    return Run(name, seconds, peak, manifest, qcow2)


def timed(argv: list[str | Path]) -> tuple[float, int]:
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(a) for a in argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = wait(proc, str(argv[0]))
    return time.monotonic() - started, peak


def floor(recipe_path: Path, manifest: dict[str, Any], work: Path) -> list[tuple[str, float, int]]:
    """mmdebstrap + mkfs.ext4 -d + qemu-img convert -c, for the same packages."""
    recipe = load(recipe_path)
    arch = manifest["arch"]
    sources = get_distro(recipe, arch, {}).describe_sources()
    packages = sorted({p["name"] for p in manifest["packages"]})
    tree = work / "floor-tree"
    raw = work / "floor.ext4"
    qcow2 = work / "floor.qcow2"
    results = []
    print(f"-- floor: mmdebstrap {len(packages)} packages", file=sys.stderr, flush=True)
    argv: list[str | Path] = [
        "mmdebstrap",
        "--mode=root",
        "--variant=apt",
        f"--arch={arch}",
        "--include=" + ",".join(packages),
        recipe.release,
        tree,
        *sources,
    ]
    results.append(("mmdebstrap (same packages, into a directory)", *timed(argv)))
    used = int(
        subprocess.run(
            ["du", "-sb", tree], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    size = (used * 5 // 4 // MIB + 256) * MIB
    with raw.open("wb") as handle:
        handle.truncate(size)
    results.append(("mkfs.ext4 -d", *timed(["mkfs.ext4", "-q", "-F", "-d", tree, raw])))
    results.append(
        ("qemu-img convert -c", *timed(["qemu-img", "convert", "-c", "-O", "qcow2", raw, qcow2]))
    )
    shutil.rmtree(tree)
    raw.unlink()
    results.append(("(floor qcow2 MiB)", qcow2.stat().st_size / MIB, 0))
    return results


def boot(image: Path, work: Path) -> dict[str, float]:
    """Seconds from starting QEMU until cloud-init says it is done (and its own uptime)."""
    print("-- boot with a NoCloud seed", file=sys.stderr, flush=True)
    key = work / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    seed = work / "seed.iso"
    proc = osbake(
        "seed", "-o", seed, "--hostname", "bench", "--ssh-key", f"{key}.pub", "--user", "bench"
    )
    wait(proc, "osbake seed")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "osbake", "boot", image, "--seed", seed, "--accel", "tcg"),
            *("--expect", DONE, "--timeout", "600", "--json"),
            *("--console-log", str(work / "console.log")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"osbake boot failed:\n{result.stderr[-3000:]}")
    report = {}
    for line in result.stdout.splitlines():
        event = json.loads(line)
        if "patterns" in event:
            report = event
    done = report["patterns"][0]
    up = UP.search(done["text"] or "")
    return {"done": done["seconds"], "uptime": float(up.group(1)) if up else float("nan")}


def step_table(run: Run) -> list[str]:
    lines = [
        f"Steps of the {run.name} build (from its manifest; memory in MiB, peak during the step; "
        "a command's peak is never below osbake's own size, as Linux counts the memory a "
        "command shared with osbake until it started its program):",
        "",
        "| step | status | seconds | osbake | largest tool |",
        "|---|---|---:|---:|---:|",
    ]
    for step in run.manifest["steps"]:
        own = step.get("memory_kib")
        tools = step.get("tools_memory_kib")
        lines.append(
            f"| {step['name']} | {step['status']} | {step['seconds']:.1f} | "
            f"{own / 1024 if own else 0:.0f} | {tools / 1024 if tools else 0:.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", type=Path, default=ROOT / "examples" / "debian-cloud.yaml")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--write", type=Path, help="replace the '## Build' section of this file")
    parser.add_argument("--no-boot", action="store_true")
    parser.add_argument("--no-floor", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="osbake-bench-", dir=args.workdir))
    cache = work / "cache"
    data = yaml.safe_load(args.recipe.read_text())
    data.pop("variants", None)
    data["outputs"] = ["qcow2"]
    data["run"] = [*data.get("run", []), "echo bench-1 > /etc/osbake-bench"]
    recipe = work / args.recipe.name
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))

    runs = [build("cold", recipe, work / "out-cold", cache)]
    runs.append(build("no change", recipe, work / "out-again", cache))
    data["run"][-1] = "echo bench-2 > /etc/osbake-bench"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    runs.append(build("one run: line changed", recipe, work / "out-run", cache))
    data["packages"] = [*data.get("packages", []), "tree"]
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    runs.append(build("one package added", recipe, work / "out-package", cache))
    cold = runs[0]

    floor_rows = [] if args.no_floor else floor(args.recipe, cold.manifest, work)
    boot_times = None if args.no_boot else boot(cold.qcow2, work)  # type: ignore[arg-type]

    floor_total = sum(s for name, s, _ in floor_rows if not name.startswith("("))
    memory_gib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / (1 << 30)
    lines = [
        "## Build",
        "",
        f"`bench/build_bench.py` on {datetime.date.today().isoformat()}: "
        f"{os.cpu_count()} cores, {memory_gib:.0f} GiB, "
        f"{platform.system()} {platform.release()}; recipe {args.recipe.name} "
        "with one `run:` line, "
        "built to a compressed qcow2 (zstd clusters) as root. Cold means an empty step cache and "
        "package pool (every package downloaded from the mirror).",
        "",
        "```sh",
        ".venv/bin/python bench/build_bench.py --write docs/benchmarks.md",
        "```",
        "",
        "| build | seconds | vs floor | peak memory (MiB) | qcow2 (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        ratio = f"{run.seconds / floor_total:.2f}x" if floor_total else "-"
        size = run.qcow2.stat().st_size / MIB if run.qcow2 else 0
        lines.append(
            f"| osbake, {run.name} | {run.seconds:.1f} | {ratio} "
            f"| {run.peak_kib / 1024:.0f} | {size:.1f} |"
        )
    if floor_rows:
        lines.append(f"| floor (sum of the three below) | {floor_total:.1f} | 1.00x | - | - |")
        for name, seconds, peak in floor_rows:
            if name.startswith("("):
                lines.append(
                    "| floor qcow2 (zlib, no bootloader or partitions) | - | - | - "
                    f"| {seconds:.1f} |"
                )
            else:
                lines.append(f"| &nbsp;&nbsp;{name} | {seconds:.1f} | | {peak / 1024:.0f} | |")
    if boot_times:
        lines += [
            "",
            "First boot of the cold image with a NoCloud seed, "
            "`osbake boot --accel tcg` (1 vCPU): cloud-init done after "
            f"{boot_times['done']:.1f} s from starting QEMU (cloud-init's own count "
            f"from the kernel's start: {boot_times['uptime']:.1f} s).",
        ]
    lines += ["", *step_table(cold), "", *step_table(runs[2]), ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        old = args.write.read_text()
        start = old.find("## Build\n")
        if start < 0:
            new = old.rstrip("\n") + "\n\n" + text
        else:
            end = old.find("\n## ", start + 1)
            new = old[:start] + text + (old[end:] if end >= 0 else "")
        args.write.write_text(new)
    if (work / "console.log").exists():  # kept, to see where the first boot spent its time
        shutil.copy(work / "console.log", args.workdir / "osbake-bench-console.log")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
