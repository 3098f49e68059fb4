"""How long `osbake validate` takes on large and hostile recipes.

    .venv/bin/python bench/recipe_load.py [--packages 10000 20000 40000] [--variants 200]
    PYTHONPATH=/path/to/other/src .venv/bin/python bench/recipe_load.py   # another osbake

Each recipe is validated with the real CLI (a new process: the figures include
starting Python, about 0.3 s here), best of --repeat runs. The recipes:

- N packages, one per line (the load must grow linearly with N);
- 10,000 packages and V variants that each add one package;
- a "billion laughs" file (nine levels of nine aliases: 10^9 values once expanded),
  which must be refused at once;
- a 10 MiB recipe, which must be refused by its size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUGHS = "\n".join(
    [
        "name: lol",
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]"
            for p, n in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "",
    ]
)


def packages(count: int) -> str:
    return "name: big\npackages:\n" + "".join(f"  - package-{i}\n" for i in range(count))


def timed(path: Path, repeat: int, timeout: float) -> tuple[float, int]:
    best = float("inf")
    code = 0
    for _ in range(repeat):
        started = time.monotonic()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "osbake", "validate", str(path)],
                capture_output=True,
                timeout=timeout,
                check=False,
                env=os.environ,
            )
            code = result.returncode
        except subprocess.TimeoutExpired:
            return float("inf"), -1
        best = min(best, time.monotonic() - started)
    return best, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, nargs="+", default=[10_000, 20_000, 40_000])
    parser.add_argument("--variants", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases: list[tuple[str, Path]] = []
        for count in args.packages:
            path = folder / f"packages-{count}.yaml"
            path.write_text(packages(count))
            cases.append((f"{count} packages ({path.stat().st_size // 1024} KiB)", path))
        path = folder / "variants.yaml"
        path.write_text(
            packages(10_000)
            + "variants:\n"
            + "".join(f"  v{i}: {{packages: [extra-{i}]}}\n" for i in range(args.variants))
        )
        cases.append((f"10000 packages, {args.variants} variants", path))
        path = folder / "laughs.yaml"
        path.write_text(LAUGHS)
        cases.append(("billion laughs (refused)", path))
        path = folder / "huge.yaml"
        path.write_text(packages(10 * 1024 * 1024 // 20))
        cases.append((f"{path.stat().st_size // 2**20} MiB recipe (refused)", path))
        print(f"{'recipe':<40} {'seconds':>8}  exit")
        for label, path in cases:
            seconds, code = timed(path, args.repeat, args.timeout)
            shown = "timeout" if seconds == float("inf") else f"{seconds:.2f}"
            print(f"{label:<40} {shown:>8}  {code}")


if __name__ == "__main__":
    main()
