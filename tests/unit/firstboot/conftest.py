"""Fixtures of the firstboot and deploy unit tests."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable

import pytest


def ssh_public_key(kind: str = "ssh-ed25519", comment: str = "ops@example", seed: int = 0) -> str:
    """A well-formed public key line (the blob starts with its own type, as real keys do)."""
    body = bytes((seed + i) % 256 for i in range(32))
    blob = struct.pack(">I", len(kind)) + kind.encode() + struct.pack(">I", 32) + body
    return f"{kind} {base64.b64encode(blob).decode()} {comment}"


@pytest.fixture
def make_key() -> Callable[..., str]:
    return ssh_public_key
