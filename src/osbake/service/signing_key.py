"""The console's signing key: made (or imported) once, kept in the data folder.

The key lives in its own gpg home, `DATA/gnupg` (mode 0700, the console's user
only), and never leaves it: the console signs its streams there and hands out
only the public keyring (`/keyring.gpg`). Which key signs is written in
`DATA/gnupg/osbake-signing-key` (its fingerprint).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

from osbake import run as runner
from osbake.errors import CommandError, UsageError
from osbake.service.config import ServiceSettings

CHOSEN = "osbake-signing-key"
_lock = threading.Lock()


def gnupg_home(settings: ServiceSettings) -> Path:
    return settings.data_dir / "gnupg"


def _home(settings: ServiceSettings) -> Path:
    home = gnupg_home(settings)
    home.mkdir(mode=0o700, exist_ok=True)
    home.chmod(0o700)
    return home


def _gpg(home: Path, *args: str | Path, stdin: bytes | None = None) -> bytes:
    runner.require_tool("gpg")
    result = runner.run(
        ["gpg", "--homedir", home, "--batch", *args],
        capture=True,
        input=stdin,
        log_output=False,
    )
    return result.stdout


def _secret_fingerprints(home: Path) -> list[str]:
    listing = _gpg(home, "--with-colons", "--list-secret-keys").decode()
    fingerprints: list[str] = []
    primary = False
    for line in listing.splitlines():
        fields = line.split(":")
        if fields[0] == "sec":
            primary = True
        elif fields[0] == "fpr" and primary:
            fingerprints.append(fields[9])
            primary = False
    return fingerprints


def fingerprint(settings: ServiceSettings) -> str:
    """The fingerprint of the console's signing key; the key is made on first use."""
    with _lock:
        home = _home(settings)
        chosen = home / CHOSEN
        if chosen.exists():
            return chosen.read_text().strip()
        if not _secret_fingerprints(home):
            _gpg(
                home,
                "--passphrase",
                "",
                "--pinentry-mode",
                "loopback",
                "--quick-gen-key",
                f"osbake console on {socket.gethostname()} <osbake@localhost>",
                "ed25519",
                "sign",
                "never",
            )
        found = _secret_fingerprints(home)[0]
        _choose(home, found)
        return found


def import_key(settings: ServiceSettings, key_file: Path) -> str:
    """Import a secret key (armoured or binary, without a passphrase) as the signing key."""
    try:
        data = key_file.read_bytes()
    except OSError as exc:
        raise UsageError(f"--signing-key {key_file}: cannot read it ({exc.strerror})") from None
    with _lock:
        home = _home(settings)
        before = set(_secret_fingerprints(home))
        try:
            _gpg(home, "--import", stdin=data)
        except CommandError as exc:
            raise UsageError(
                f"--signing-key {key_file}: gpg cannot import it ({exc.message})",
                hint="give a secret key exported with 'gpg --export-secret-keys KEYID'",
            ) from None
        new = [f for f in _secret_fingerprints(home) if f not in before]
        if not new and not before:
            raise UsageError(
                f"--signing-key {key_file}: holds no secret key",
                hint="export it with 'gpg --export-secret-keys KEYID > key.gpg'",
            )
        found = new[0] if new else _imported(home, data, before)
        _choose(home, found)
        return found


def _imported(home: Path, data: bytes, known: set[str]) -> str:
    """The fingerprint of a key imported before (importing it again adds nothing)."""
    shown = _gpg(home, "--with-colons", "--import-options", "show-only", "--import", stdin=data)
    for line in shown.decode().splitlines():
        fields = line.split(":")
        if fields[0] == "fpr" and fields[9] in known:
            return fields[9]
    raise UsageError("the signing key file holds no secret key")


def _choose(home: Path, found: str) -> None:
    partial = home / f".{CHOSEN}.partial"
    partial.write_text(found + "\n")
    partial.replace(home / CHOSEN)


def keyring_file(settings: ServiceSettings) -> Path:
    """The signing key's public part as a binary keyring file (for gpgv and sstream-query),
    exported once per key: serving it starts no process."""
    key = fingerprint(settings)
    path = gnupg_home(settings) / f"public-{key}.gpg"
    if not path.exists():
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(_gpg(gnupg_home(settings), "--export", key))
        partial.replace(path)
    return path


def public_keyring(settings: ServiceSettings) -> bytes:
    return keyring_file(settings).read_bytes()


def stop_agent(settings: ServiceSettings) -> None:
    """Stop the gpg-agent that signing started (nothing outlives the console)."""
    home = gnupg_home(settings)
    if home.exists() and runner.exists("gpgconf"):
        with contextlib.suppress(Exception):
            runner.run(
                ["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False, capture=True
            )
