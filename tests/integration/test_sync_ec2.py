"""`osbake sync` into EC2, against moto in server mode (started by this module).

moto implements the EBS direct API, register_image and copy_image; it keeps only
the name and description of a registered image, so the rest (architecture, boot
mode, block device mapping) is checked on the requests osbake sends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from osbake.publish import publish
from osbake.publish.sync import sync
from osbake.publish.targets.ec2 import BLOCK, Ec2Target
from tests.publish_helpers import http_server, make_build

pytestmark = pytest.mark.integration

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
}


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, "moto_server exited"
                assert time.monotonic() < deadline, "moto_server did not answer in 60s"
                time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


class _EndpointSession:
    """A boto3 session whose clients talk to moto; records the parameters of each call."""

    def __init__(self, endpoint: str) -> None:
        import boto3

        self.endpoint = endpoint
        self.session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.session.events.register("provide-client-params.*.*", self._record)

    def _record(self, params: dict[str, Any], model: Any, context: Any, **_: Any) -> None:
        self.calls.append((model.service_model.service_name, model.name, dict(params)))

    def client(self, service: str, region_name: str) -> Any:
        return self.session.client(service, region_name=region_name, endpoint_url=self.endpoint)

    def params(self, operation: str) -> list[dict[str, Any]]:
        return [p for _, name, p in self.calls if name == operation]


def test_sync_into_ec2_snapshot_skips_zero_blocks_registers_and_copies(
    moto_endpoint: str, tmp_path: Path
) -> None:
    # A 16 MiB sparse raw disk with data in two places: blocks 0 and 20 (+21, straddled).
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as handle:
        handle.truncate(16 << 20)
        handle.seek(0)
        handle.write(b"\xeb\x63\x90" + b"boot" * 100)
        handle.seek(20 * BLOCK + BLOCK - 10)
        handle.write(b"X" * 20)
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True
    )
    manifest = make_build(
        tmp_path / "out",
        name="ami",
        boot=["bios", "uefi"],
        files={"ami.qcow2": ("qcow2", qcow2.read_bytes())},
    )
    publish([manifest], tmp_path / "repo")
    session = _EndpointSession(moto_endpoint)

    with http_server(tmp_path / "repo") as url:
        target = Ec2Target(["eu-west-1", "us-east-1"], session=session)
        result = sync(url, target, staging=tmp_path / "stage")
        assert [i.name for i in result.transferred] == ["disk1.img"]

        # The blocks sent are exactly the non-zero ones, each with its SHA256.
        blocks = session.params("PutSnapshotBlock")
        assert sorted(b["BlockIndex"] for b in blocks) == [0, 20, 21]
        assert all(b["ChecksumAlgorithm"] == "SHA256" and b["DataLength"] == BLOCK for b in blocks)
        (complete,) = session.params("CompleteSnapshot")
        assert complete["ChangedBlocksCount"] == 3
        assert complete["ChecksumAggregationMethod"] == "LINEAR"

        # moto kept the blocks: they make up the disk again.
        ebs = session.client("ebs", "eu-west-1")
        snapshot_id = complete["SnapshotId"]
        rebuilt = bytearray(16 << 20)
        for block in ebs.list_snapshot_blocks(SnapshotId=snapshot_id)["Blocks"]:
            data = ebs.get_snapshot_block(
                SnapshotId=snapshot_id,
                BlockIndex=block["BlockIndex"],
                BlockToken=block["BlockToken"],
            )["BlockData"].read()
            rebuilt[block["BlockIndex"] * BLOCK : (block["BlockIndex"] + 1) * BLOCK] = data
        assert bytes(rebuilt) == raw.read_bytes()

        (register,) = session.params("RegisterImage")
        assert register["Name"] == "ami-bookworm-amd64-20261120"
        assert register["Architecture"] == "x86_64"
        assert register["BootMode"] == "uefi-preferred"
        assert register["VirtualizationType"] == "hvm"
        assert register["EnaSupport"] is True
        mapping = register["BlockDeviceMappings"][0]
        assert mapping["Ebs"]["SnapshotId"] == snapshot_id
        assert register["RootDeviceName"] == mapping["DeviceName"]
        (copy,) = session.params("CopyImage")
        assert copy["SourceRegion"] == "eu-west-1"
        assert copy["Name"] == "ami-bookworm-amd64-20261120"

        for region in ("eu-west-1", "us-east-1"):
            images = session.client("ec2", region).describe_images(Owners=["self"])["Images"]
            assert [i["Name"] for i in images] == ["ami-bookworm-amd64-20261120"]

        # A second sync (the command, with the environment pointing at moto) sends nothing.
        env = {**os.environ, **AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint}
        again = subprocess.run(
            [sys.executable, "-m", "osbake", "sync", url, "ec2:eu-west-1,us-east-1"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert again.returncode == 0, again.stderr
        assert "1 items selected, 0 transferred" in again.stdout
