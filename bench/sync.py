"""Benchmark: `osbake sync` against the reference client's `sstream-mirror`.

Both mirror the same signed simplestreams tree (several GB of images published
by osbake) from the same local HTTP server, one after the other, in one run;
then both run again on the full mirror (which should transfer nothing). Last,
two `osbake sync` start together into one new mirror: each item is downloaded
once (the second waits for the item's lock, then finds it there).

    .venv/bin/python bench/sync.py --gib 4 --files 4 --workdir /var/tmp/osbake-bench

Prints a Markdown table for docs/benchmarks.md. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.publish_helpers import GpgKey, gpg_key, make_build  # noqa: E402

from osbake.publish import Label, publish  # noqa: E402

BIN = Path(sys.executable).parent
CHUNK = 8 << 20


def write_random(path: Path, size: int) -> str:
    """A file of `size` bytes that does not compress (images mostly do not); its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(CHUNK, left))
            handle.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def make_tree(workdir: Path, gib: float, files: int, key: GpgKey) -> Path:
    """`files` builds of two recipes on successive days, published signed into one tree."""
    repo = workdir / "tree"
    size = int(gib * (1 << 30) / files)
    os.environ["GNUPGHOME"] = str(key.home)  # publish() signs with gpg from this home
    for n in range(files):
        out = workdir / f"build{n}"
        name = f"bench{n % 2}"
        manifest = make_build(
            out,
            name=name,
            finished=f"2026-11-{10 + n}T00:00:00+00:00",
            files={f"{name}.qcow2": ("qcow2", b"")},
        )
        # The placeholder becomes a large image; the manifest gets its size and sha256.
        sha256 = write_random(out / f"{name}.qcow2", size)
        data = json.loads(manifest.read_text())
        data["artifacts"][0].update(size=size, sha256=sha256)
        manifest.write_text(json.dumps(data))
        publish([manifest], repo, label=Label.RELEASE, sign=key.fingerprint)
        shutil.rmtree(out)
    return repo


def serve(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", str(root), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "streams/v1/index.json", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the HTTP server did not start")


def timed(argv: list[str]) -> float:
    os.sync()  # the previous run's writeback does not count against this one
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed:\n{result.stderr[-3000:]}")
    return seconds


def together(argv: list[str]) -> tuple[float, int]:
    """Two runs of `argv` started at once: the wall time and the bytes both downloaded."""
    os.sync()
    started = time.monotonic()
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    downloaded = 0
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{argv[0]} failed:\n{err[-3000:]}")
        downloaded += json.loads(out.strip().splitlines()[-1])["bytes"]
    return time.monotonic() - started, downloaded


def image_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.qcow2"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=4.0, help="size of the tree (GiB)")
    parser.add_argument("--files", type=int, default=4, help="number of images")
    parser.add_argument("--jobs", type=int, default=4, help="osbake sync --jobs")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/osbake-bench-sync"))
    parser.add_argument("--keep", action="store_true", help="keep the tree and mirrors")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    (args.workdir / "key").mkdir(parents=True)
    with gpg_key(args.workdir / "key") as key:
        started = time.monotonic()
        repo = make_tree(args.workdir, args.gib, args.files, key)
        made = time.monotonic() - started
        size = image_bytes(repo)
        proc, url = serve(repo)
        try:
            index = url + "streams/v1/index.sjson"
            ref, ours = args.workdir / "mirror-sstream", args.workdir / "mirror-osbake"
            ss = [str(BIN / "sstream-mirror"), "--keyring", str(key.keyring), index, str(ref)]
            ob = [
                str(BIN / "osbake"),
                "sync",
                "--keyring",
                str(key.keyring),
                url,
                str(ours),
                "--jobs",
                str(args.jobs),
                "--json",
            ]
            first_ss = timed(ss)
            first_ob = timed(ob)
            again_ss = timed(ss)
            again_ob = timed(ob)
            assert image_bytes(ours) == size, "osbake's mirror is incomplete"
            assert image_bytes(ref) == size, "sstream-mirror's mirror is incomplete"
            both = args.workdir / "mirror-together"
            both_seconds, both_bytes = together([*ob[:5], str(both), *ob[6:]])
            assert image_bytes(both) == size, "the mirror of two syncs at once is incomplete"
            rows = [
                ("sstream-mirror (python-simplestreams)", first_ss, again_ss),
                (f"osbake sync --jobs {args.jobs}", first_ob, again_ob),
            ]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
    print(
        f"tree: {size / (1 << 30):.2f} GiB in {args.files} images, signed; "
        f"made in {made:.0f}s; {os.cpu_count()} cores\n"
    )
    print("| client | full mirror | MB/s | second run (no change) |")
    print("|---|---:|---:|---:|")
    for name, first, again in rows:
        print(f"| {name} | {first:.1f} s | {size / first / 1e6:.0f} | {again:.2f} s |")
    print(
        f"\ntwo `osbake sync --jobs {args.jobs}` at once into one mirror: {both_seconds:.1f} s, "
        f"{both_bytes / 1e6:.0f} MB downloaded in all for a {size / 1e6:.0f} MB tree"
    )
    if not args.keep:
        shutil.rmtree(args.workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
