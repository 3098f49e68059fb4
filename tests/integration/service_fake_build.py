"""A stand-in for `osbake build --json` that takes a second instead of a minute.

It speaks the same protocol: JSON events on stdout (begin, step, command, log,
result, finish), artifacts and `<image>.manifest.json` in the output directory,
non-zero exit on failure. What it does is read from the recipe's description:
  fake: sleep=SECONDS fail=STEP disk probe=PATH
(`probe` tries to read PATH, as a hostile recipe would, and logs what happened.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import yaml

STEPS = ["bootstrap", "install", "packages", "finalise", "manifest", "output tar"]


def emit(kind: str, **fields: object) -> None:
    print(json.dumps({"event": kind, "time": round(time.time(), 3), **fields}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe")
    parser.add_argument("-o", "--output")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--variant")
    parser.add_argument("--arch", default="amd64")
    args = parser.parse_args()
    recipe = yaml.safe_load(Path(args.recipe).read_text())
    words = str(recipe.get("description", "")).split()
    options = dict(w.split("=", 1) if "=" in w else (w, "1") for w in words)
    sleep = float(options.get("sleep", "0.05"))
    fail = options.get("fail")
    image = recipe["name"] + (f"-{args.variant}" if args.variant else "")
    steps = STEPS + (["output raw"] if "disk" in options else [])
    emit("begin", image=image, steps=[{"name": s, "key": "0" * 64, "describe": s} for s in steps])
    emit("log", line=f"fake: running as uid {os.getuid()} gid {os.getgid()}")
    tokens = [k for k, v in os.environ.items() if v.startswith("osb_")]
    emit("log", line=f"fake: tokens in the environment: {tokens or 'none'}")
    if "probe" in options:
        try:
            data = Path(options["probe"]).read_bytes()
            emit("log", line=f"fake: probe read {len(data)} bytes: {data[:80]!r}")
        except OSError as exc:
            emit("log", line=f"fake: probe refused: {exc.strerror}")
    for step in steps:
        emit("step", name=step)
        emit("command", line=f"fake-tool --step {step}")
        for n in range(3):
            emit("log", line=f"{step}: working {n}")
            time.sleep(sleep / 3)
        if step == fail:
            emit("log", line=f"{step}: something broke")
            print(f"fake: {step} failed", file=sys.stderr, flush=True)
            emit(
                "finish",
                ok=False,
                error=f"step '{step}' failed: fake-tool exited with status 1",
                step=step,
                artifacts=[],
            )
            return 1
        emit("result", name=step, seconds=sleep, status="done")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    artifacts = []
    formats = [("tar", ".tar")] + ([("raw", ".raw")] if "disk" in options else [])
    for fmt, suffix in formats:
        path = out / f"{image}{suffix}"
        path.write_bytes((f"{image} {fmt} {time.time()}\n" * 2000).encode())
        data = path.read_bytes()
        artifacts.append(
            {
                "file": path.name,
                "format": fmt,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    manifest = {
        "manifest_version": 1,
        "osbake_version": "fake",
        "image": image,
        "name": recipe["name"],
        "variant": args.variant,
        "arch": args.arch,
        "distro": "debian",
        "release": "bookworm",
        "recipe": recipe,
        "recipe_sha256": hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest(),
        "elements": [{"name": "base", "sha256": "1" * 64, "origin": "builtin"}],
        "packages": [
            {
                "name": "fakepkg",
                "version": options.get("pkgversion", "1.0"),
                "arch": args.arch,
                "source": "fakepkg",
                "source_version": "1.0",
            },
            {
                "name": "base-files",
                "version": "12.4",
                "arch": args.arch,
                "source": "base-files",
                "source_version": "12.4",
            },
        ],
        "steps": [{"name": s, "key": "0" * 64, "seconds": sleep} for s in steps],
        "artifacts": artifacts,
        "build": {
            "started": "2026-01-01T00:00:00+00:00",
            "finished": "2026-01-01T00:00:01+00:00",
            "seconds": 1.0,
        },
    }
    (out / f"{image}.manifest.json").write_text(json.dumps(manifest, indent=2))
    emit("finish", ok=True, error=None, step=None, artifacts=[a["file"] for a in artifacts])
    return 0


if __name__ == "__main__":
    sys.exit(main())
