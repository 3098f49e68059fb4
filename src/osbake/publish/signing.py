"""OpenPGP clearsigning of stream files and checking them against a keyring (gpg, gpgv)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from osbake import run as runner
from osbake.errors import CommandError, PublishError, UsageError, VerifyError
from osbake.events import Events

SIGNED_HEADER = b"-----BEGIN PGP SIGNED MESSAGE-----"


def _home(home: Path | None) -> list[str | Path]:
    """gpg's --homedir option for a key kept in a folder of its own (None: gpg's default)."""
    return ["--homedir", home] if home is not None else []


def check_key(key: str, events: Events | None = None, *, home: Path | None = None) -> None:
    """Fail before anything is written if gpg has no secret key `key`."""
    runner.require_tool("gpg")
    result = runner.run(
        ["gpg", *_home(home), "--batch", "--list-secret-keys", "--with-colons", key],
        events=events,
        capture=True,
        check=False,
    )
    if result.returncode != 0 or b"sec:" not in result.stdout:
        raise UsageError(
            f"--sign {key}: gpg has no secret key '{key}'",
            hint="list keys with 'gpg --list-secret-keys'; GNUPGHOME selects the keyring",
        )


def clearsign(
    source: Path,
    target: Path,
    key: str,
    events: Events | None = None,
    *,
    home: Path | None = None,
) -> None:
    """Write `target` as the clearsigned copy of `source` (inline signature, .sjson)."""
    try:
        runner.run(
            [
                "gpg",
                *_home(home),
                "--batch",
                "--yes",
                "--local-user",
                key,
                "--digest-algo",
                "SHA512",
                "--clearsign",
                "--output",
                target,
                source,
            ],
            events=events,
        )
    except CommandError as exc:
        raise PublishError(
            f"could not sign {source.name} with key '{key}': {exc.message}",
            hint="the key must be usable without a passphrase prompt (gpg-agent or no passphrase)",
        ) from exc


def verify(content: bytes, keyring: Path, what: str, events: Events | None = None) -> bytes:
    """The signed payload of clearsigned `content`, checked against `keyring`.

    The payload is what gpgv says was signed, never text around the signature.
    """
    if not content.lstrip().startswith(SIGNED_HEADER):
        raise VerifyError(
            f"{what} is not signed, and a keyring was given",
            hint="sync from the signed index (streams/v1/index.sjson), or drop --keyring "
            "to accept unsigned streams",
        )
    runner.require_tool("gpgv")
    with tempfile.TemporaryDirectory(prefix="osbake-gpgv-") as home:
        result = runner.run(
            [
                "gpgv",
                "--homedir",
                home,
                "--keyring",
                keyring.resolve(),
                "--output",
                "-",
                "-",
            ],
            events=events,
            input=content,
            capture=True,
            check=False,
            log_output=False,
        )
    if result.returncode != 0:
        lines = [line.removeprefix("gpgv: ").strip() for line in result.tail if line.strip()]
        telling = [
            line
            for line in lines
            if any(w in line for w in ("BAD signature", "public key", "Can't check", "no valid"))
        ]
        detail = "; ".join(telling or lines[-1:]) or "bad signature"
        raise VerifyError(
            f"{what}: signature check failed, refused ({detail}; keyring {keyring})",
            hint="the file was changed after it was signed, or it was signed by a key that "
            "is not in the keyring; do not use this stream",
        )
    return result.stdout


def check_keyring(keyring: Path) -> None:
    if not keyring.is_file():
        raise UsageError(
            f"--keyring {keyring}: no such file",
            hint="export the publisher's public key with 'gpg --export KEYID > keyring.gpg'",
        )
