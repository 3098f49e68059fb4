"""Where a first boot's seconds go: boot an image once and print the guest's own account.

    .venv/bin/python bench/first_boot.py IMAGE [--datasource nocloud|ec2|openstack|configdrive]
        [--cpus N] [--timeout 600] [--console-log FILE]

The boot is `osbake boot` under TCG, the instance given as `--datasource` says. The
headline figure is the time from QEMU's start to cloud-init's `finished` line on the
serial console. The user-data then starts a transient unit that waits for the boot to
end and prints, to the console, `systemd-analyze time`, the critical chain to
cloud-final.service, `systemd-analyze blame` and `cloud-init analyze show`/`blame`,
after the guest's CPU time (user, system, idle) and each unit's (systemd's cgroup
accounting); this script prints that block as the guest wrote it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

DONE = r"Cloud-init v\. \S+ finished at"
BEGIN, END = "OSBAKE-BOOT-REPORT-BEGIN", "OSBAKE-BOOT-REPORT-END"

# The guest is busy all through a first boot under TCG (idle under 3 %), so the boot's
# length is the sum of the CPU time of what runs in it: the report gives each unit's,
# from systemd's cgroup accounting. Under TCG the guest's clock is the host's, so these
# seconds stretch with the host's load as wall time does: compare shares between boots.
# Slices are left out (they add up their units); init.scope is systemd itself, with the
# generators it runs.
CPU_BY_UNIT = r"""systemctl show --property=Id --property=CPUUsageNSec '*' 2>/dev/null |
  awk 'BEGIN { RS = ""; FS = "\n" }
    { id = ""; ns = ""
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^Id=/) id = substr($i, 4)
        if ($i ~ /^CPUUsageNSec=[0-9]+$/) ns = substr($i, 14)
      }
      if (id != "" && id !~ /[.]slice$/ && ns != "" && ns + 0 < 1e19 && ns + 0 >= 5e7)
        printf "%8.0f ms  %s\n", ns / 1e6, id }' | sort -rn"""

REPORT = f"""\
#!/bin/sh
systemctl is-system-running --wait >/dev/null 2>&1
echo {BEGIN}
read -r _ user nice system idle iowait irq softirq _ < /proc/stat
echo "Guest CPU time until now: user $(((user + nice) * 10)) ms," \\
  "system $(((system + irq + softirq) * 10)) ms, idle $(((idle + iowait) * 10)) ms"
echo "CPU time by unit (50 ms or more):"
{CPU_BY_UNIT}
systemd-analyze time
systemd-analyze critical-chain cloud-final.service --no-pager
systemd-analyze blame --no-pager | head -n 25
cloud-init analyze show
cloud-init analyze blame | head -n 40
echo {END}
"""

USER_DATA = {
    "write_files": [
        {"path": "/usr/local/sbin/osbake-boot-report", "permissions": "0755", "content": REPORT}
    ],
    # A timer's service is not a boot job: the report waits for the boot to end.
    "runcmd": [
        [
            "systemd-run",
            "--on-active=1",
            "--unit=osbake-boot-report",
            "--property=StandardOutput=journal+console",
            "/usr/local/sbin/osbake-boot-report",
        ]
    ],
}


def report_lines(console: str) -> list[str]:
    """The guest's report, without the kernel's time stamps and the unit's name."""
    lines: list[str] = []
    inside = False
    for raw in console.replace("\r", "").splitlines():
        line = re.sub(r"^\[\s*[\d.]+\] osbake-boot-report\[\d+\]: ", "", raw)
        if line == raw and "osbake-boot-report" not in raw:
            continue  # another unit's line, interleaved
        if line.endswith(BEGIN):  # terminal escapes may come before it on the line
            inside = True
        elif line.endswith(END):
            break
        elif inside:
            lines.append(line)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("image", type=Path)
    parser.add_argument(
        "--datasource", default="nocloud", choices=["nocloud", "configdrive", "ec2", "openstack"]
    )
    parser.add_argument("--cpus", type=int)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--console-log", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="osbake-first-boot-") as tmp:
        user_data = Path(tmp) / "user-data"
        user_data.write_text("#cloud-config\n" + json.dumps(USER_DATA, indent=1) + "\n")
        log = args.console_log or Path(tmp) / "console.log"
        argv = [
            *(sys.executable, "-m", "osbake", "boot", str(args.image), "--accel", "tcg"),
            *("--datasource", args.datasource, "--hostname", "bench"),
            *("--user-data", str(user_data), "--expect", DONE, "--expect", END),
            *("--timeout", str(args.timeout), "--console-log", str(log), "--json"),
            *(("--cpus", str(args.cpus)) if args.cpus else ()),
        ]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        report = next(
            (
                json.loads(line)
                for line in reversed(result.stdout.splitlines())
                if line.startswith("{") and '"event": "report"' in line
            ),
            None,
        )
        console = log.read_text(errors="replace")
    if report is None:
        print(result.stderr[-2000:], file=sys.stderr)
        return 1
    done = report["patterns"][0]
    print(f"image: {args.image}")
    print(f"datasource: {args.datasource}; {report['accelerator']}, {report['cpus']} vCPU(s)")
    if done["matched"]:
        print(f"cloud-init done after {done['seconds']:.1f} s from QEMU's start")
    else:
        print(f"cloud-init did not finish: {report['outcome']}")
    print("\n".join(report_lines(console)))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
