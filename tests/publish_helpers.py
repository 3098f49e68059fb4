"""Helpers of the publish/sync tests: synthetic builds, a throwaway gpg key, an HTTP server."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def make_build(
    outdir: Path,
    *,
    name: str = "demo",
    variant: str | None = None,
    arch: str = "amd64",
    finished: str = "2026-11-20T10:00:00+00:00",
    files: dict[str, tuple[str, bytes]] | None = None,
    boot: list[str] | None = None,
    packages: list[tuple[str, str]] | None = None,
) -> Path:
    """Write artifacts and an osbake manifest listing them; return the manifest path.

    `files` maps a file name to (format, content); `packages` are (name, version)
    (default: bash 5.2).
    """
    outdir.mkdir(parents=True, exist_ok=True)
    if files is None:
        files = {f"{name}.qcow2": ("qcow2", os.urandom(3000) + finished.encode())}
    image = name + (f"-{variant}" if variant else "")
    artifacts = []
    for file, (fmt, content) in files.items():
        (outdir / file).write_bytes(content)
        artifacts.append(
            {
                "file": file,
                "format": fmt,
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
            }
        )
    recipe: dict[str, object] = {"name": name, "release": "bookworm"}
    if boot:
        recipe["boot"] = boot
    manifest = {
        "osbake_version": "0.1.0",
        "image": image,
        "name": name,
        "variant": variant,
        "arch": arch,
        "distro": "debian",
        "release": "bookworm",
        "recipe": recipe,
        "recipe_sha256": hashlib.sha256(json.dumps(recipe).encode()).hexdigest(),
        "packages": [
            {"name": n, "version": v, "arch": arch, "source": n, "source_version": v}
            for n, v in (packages or [("bash", "5.2")])
        ],
        "artifacts": artifacts,
        "build": {"started": finished, "finished": finished, "seconds": 1.0},
    }
    path = outdir / f"{image}.manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path


@dataclass
class GpgKey:
    home: Path
    fingerprint: str
    keyring: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home)}


@contextmanager
def gpg_key(directory: Path) -> Iterator[GpgKey]:
    """A throwaway signing key; its gpg-agent is stopped afterwards (nothing outlives a test)."""
    key = make_gpg_key(directory)
    try:
        yield key
    finally:
        stop_gpg_agent(key)


def make_gpg_key(directory: Path) -> GpgKey:
    """A signing key with no passphrase in a throwaway GNUPGHOME, and its public keyring.

    gpg starts an agent for it: stop it with stop_gpg_agent (or use `gpg_key`).
    """
    home = directory / "gnupg"
    home.mkdir(mode=0o700, parents=True)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(
        [
            "gpg",
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "osbake test <test@example.org>",
            "ed25519",
            "sign",
            "never",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        ["gpg", "--batch", "--list-secret-keys", "--with-colons"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
    )
    keyring = directory / "keyring.gpg"
    keyring.write_bytes(
        subprocess.run(
            ["gpg", "--batch", "--export", fingerprint], env=env, check=True, capture_output=True
        ).stdout
    )
    return GpgKey(home, fingerprint, keyring)


def stop_gpg_agent(key: GpgKey) -> None:
    subprocess.run(["gpgconf", "--kill", "all"], env=key.env, check=False, capture_output=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_server(root: Path, *, rate: int | None = None) -> Iterator[str]:
    """Serve `root` on 127.0.0.1 (with Range requests, see RangeHandler); yield its URL.

    `rate` throttles each response to about that many bytes per second, so that two
    syncs started together are still downloading when the other one starts.
    """
    handler = functools.partial(RangeHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.rate = rate  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class RangeHandler(_QuietHandler):
    """SimpleHTTPRequestHandler with single `Range: bytes=N-` support (for resume tests),
    throttled to the server's `rate` (bytes per second) when it has one."""

    requests: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        RangeHandler.requests.append((self.path, self.headers.get("Range")))
        spec = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not spec or not path.is_file() or not spec.startswith("bytes="):
            super().do_GET()
            return
        start = int(spec.removeprefix("bytes=").split("-")[0])
        size = path.stat().st_size
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        with path.open("rb") as handle:
            handle.seek(start)
            self.copyfile(handle, self.wfile)

    def copyfile(self, source: Any, outputfile: Any) -> None:
        rate = getattr(self.server, "rate", None)
        if not rate:
            super().copyfile(source, outputfile)
            return
        chunk = max(1024, rate // 20)
        try:
            for block in iter(lambda: source.read(chunk), b""):
                outputfile.write(block)
                time.sleep(len(block) / rate)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a killed sync)


@contextmanager
def throttled_proxy(port: int, rate: int, *, stall_on: bytes | None = None) -> Iterator[int]:
    """A TCP proxy to 127.0.0.1:`port` that forwards what clients send at about `rate`
    bytes per second (answers pass at full speed); yields the proxy's port.

    It slows an upload down (to Glance, say) so that a test can kill it half-way. With
    `stall_on`, a client's bytes stop going through once they contain it (an upload's
    request line, say), until the client goes away.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def pipe(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        try:
            while True:
                data = src.recv(max(1024, limit // 20) if limit else 65536)
                if not data:
                    break
                if limit and stall_on is not None and stall_on in data:
                    while src.recv(65536):  # hold it back until the client is gone
                        pass
                    break
                dst.sendall(data)
                if limit:
                    time.sleep(len(data) / limit)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            server = socket.create_connection(("127.0.0.1", port))
            threading.Thread(target=pipe, args=(client, server, rate), daemon=True).start()
            threading.Thread(target=pipe, args=(server, client, None), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        listener.close()


def osbake_sync_together(
    argvs: list[list[str]], env: dict[str, str], *, stagger: float = 0.0, timeout: float = 300
) -> list[subprocess.CompletedProcess[str]]:
    """Run `osbake sync` command lines as real processes at the same time (each started
    `stagger` seconds after the one before); return them all once they have ended."""
    procs = []
    for n, argv in enumerate(argvs):
        if n and stagger:
            time.sleep(stagger)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "osbake", "sync", *argv],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done
