"""The relay QEMU's guestfwd starts per guest connection reaches the metadata service."""

from __future__ import annotations

import subprocess
import sys

import pytest

from osbake.firstboot.metadata import MetadataService
from osbake.firstboot.seed import seed_content

pytestmark = pytest.mark.integration

USER_DATA = b"#cloud-config\nruncmd: [echo hello]\n"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f ops@example"


@pytest.mark.parametrize("kind", ["ec2", "openstack"])
def test_relay_carries_a_request(kind: str) -> None:
    """QEMU runs the relay with the guest's connection on its stdin and stdout."""
    made = seed_content(format="configdrive", user_data=USER_DATA, ssh_keys=[KEY])
    with MetadataService(kind, made, imdsv2=False) as service:
        command = service.qemu_user_net()[1].split("-cmd:", 1)[1].replace(",,", ",")
        argv = command.split(" ")
        assert argv[0] == sys.executable
        result = subprocess.run(
            argv,
            input=b"GET /latest/user-data HTTP/1.0\r\n\r\n",
            capture_output=True,
            timeout=20,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"HTTP/1.0 200"), result.stdout
    assert result.stdout.endswith(USER_DATA)
