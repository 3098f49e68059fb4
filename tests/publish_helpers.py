"""Helpers of the publish/sync tests: synthetic builds, a throwaway gpg key, an HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def make_build(
    outdir: Path,
    *,
    name: str = "demo",
    variant: str | None = None,
    arch: str = "amd64",
    finished: str = "2026-11-20T10:00:00+00:00",
    files: dict[str, tuple[str, bytes]] | None = None,
    boot: list[str] | None = None,
) -> Path:
    """Write artifacts and an osbake manifest listing them; return the manifest path.

    `files` maps a file name to (format, content).
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
            {
                "name": "bash",
                "version": "5.2",
                "arch": arch,
                "source": "bash",
                "source_version": "5.2",
            }
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
def http_server(root: Path) -> Iterator[str]:
    """Serve `root` on 127.0.0.1 (with Range requests, see RangeHandler); yield its URL."""
    handler = functools.partial(RangeHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class RangeHandler(_QuietHandler):
    """SimpleHTTPRequestHandler with single `Range: bytes=N-` support (for resume tests)."""

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
            self.send_error(416)
            return
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        with path.open("rb") as handle:
            handle.seek(start)
            self.wfile.write(handle.read())
