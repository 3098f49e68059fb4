"""Boot the cloud image under TCG many times in a row and print how each boot went.

    .venv/bin/python bench/tcg_boots.py IMAGE [--boots 20] [--cpus N]
        [--tcg-threads single|multi] [--timeout 300] [--keep-logs DIR]

Each boot is the benchmark's first boot: `osbake boot`'s machine under TCG with a
NoCloud seed, waiting for cloud-init to say it finished. A boot counts as hung
when that does not show within the timeout, or when the console shows a soft
lockup, an oops, a panic or an RCU stall (the boot stops there). Without
--cpus/--tcg-threads the machine is what `osbake boot --accel tcg` runs by
default. Prints one line per boot, then the summary (min, median, max, hangs).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from osbake import vm

DONE = r"Cloud-init v\. \S+ finished at"
# What a hung or crashed guest prints on its console.
TROUBLE = [
    r"soft lockup",
    r"rcu: INFO: .* stall",
    r"Oops:",
    r"Kernel panic",
    r"BUG: ",
    r"general protection fault",
    r"emergency mode",
]


def make_seed(folder: Path) -> Path:
    seed = folder / "seed.iso"
    subprocess.run(
        [sys.executable, "-m", "osbake", "seed", "-o", str(seed), "--hostname", "bench"],
        check=True,
        capture_output=True,
    )
    return seed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--boots", type=int, default=20)
    parser.add_argument("--cpus", type=int)
    parser.add_argument("--tcg-threads", choices=[str(t) for t in vm.TcgThreads])
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--keep-logs", type=Path, help="keep each boot's console here")
    args = parser.parse_args()

    times: list[float] = []
    hangs = 0
    with tempfile.TemporaryDirectory(prefix="osbake-tcg-bench-") as tmp:
        seed = make_seed(Path(tmp))
        machine = ""
        for number in range(1, args.boots + 1):
            log = (args.keep_logs or Path(tmp)) / f"boot-{number:02d}.console.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            report = vm.boot(
                args.image,
                seed=seed,
                expect=[DONE],
                fail_on=TROUBLE,
                timeout=args.timeout,
                cpus=args.cpus,
                accel=vm.Accel.TCG,
                tcg_threads=vm.TcgThreads(args.tcg_threads) if args.tcg_threads else None,
                log_path=log,
            )
            machine = report.machine
            if report.passed:
                times.append(report.seconds)
                print(f"boot {number:2d}: cloud-init done after {report.seconds:6.1f} s")
            else:
                hangs += 1
                why = report.failure.text if report.failure else str(report.outcome)
                print(f"boot {number:2d}: HUNG after {report.seconds:6.1f} s: {why}")
            sys.stdout.flush()
    print(f"machine: {machine}")
    if times:
        print(
            f"{len(times)} of {args.boots} boots done: min {min(times):.1f} s, "
            f"median {statistics.median(times):.1f} s, max {max(times):.1f} s; hangs: {hangs}"
        )
    else:
        print(f"no boot finished; hangs: {hangs}")
    return 1 if hangs else 0


if __name__ == "__main__":
    sys.exit(main())
