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

from osbake.errors import VerifyError
from osbake.publish import publish
from osbake.publish.sync import sync
from osbake.publish.targets.ec2 import BLOCK, Ec2Target
from tests.publish_helpers import (
    RangeHandler,
    http_server,
    make_build,
    osbake_sync_together,
    throttled_proxy,
)

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


# -- integrity under concurrency and faults --------------------------------------------------

RATE = 2 << 20  # bytes per second


def _disk(tmp_path: Path, name: str, blocks: int = 24) -> tuple[Path, bytes]:
    """A sparse raw disk (32 MiB or more) with random data in `blocks` scattered blocks (a
    few straddling two), published as a qcow2 of the product `name`."""
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as handle:
        handle.truncate(max(32 << 20, (2 * blocks + 2) * BLOCK))
        for n in range(blocks):
            handle.seek(n * 2 * BLOCK + (BLOCK - 100 if n % 5 == 0 else 0))
            handle.write(os.urandom(BLOCK // 2))
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True
    )
    content = qcow2.read_bytes()
    manifest = make_build(
        tmp_path / "out",
        name=name,
        boot=["bios", "uefi"],
        files={f"{name}.qcow2": ("qcow2", content)},
    )
    publish([manifest], tmp_path / "repo")
    return raw, content


def _env(endpoint: str, cache: Path) -> dict[str, str]:
    return {**os.environ, **AWS_ENV, "AWS_ENDPOINT_URL": endpoint, "OSBAKE_CACHE_DIR": str(cache)}


def _amis(session: _EndpointSession, region: str, name: str) -> list[dict[str, Any]]:
    return [
        image
        for image in session.client("ec2", region).describe_images(Owners=["self"])["Images"]
        if image.get("Name") == f"{name}-bookworm-amd64-20261120"
    ]


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def _snapshot_disk(session: _EndpointSession, snapshot_id: str, size: int) -> bytes:
    """The disk as the snapshot holds it: every block written, read back through the API."""
    ebs = session.client("ebs", "eu-west-1")
    disk = bytearray(size)
    for block in ebs.list_snapshot_blocks(SnapshotId=snapshot_id)["Blocks"]:
        index = block["BlockIndex"]
        assert (index + 1) * BLOCK <= size, f"block {index} is beyond the disk"
        data = ebs.get_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=index, BlockToken=block["BlockToken"]
        )["BlockData"].read()
        assert len(data) == BLOCK
        disk[index * BLOCK : (index + 1) * BLOCK] = data
    return bytes(disk)


def _assert_one_checked_ami_per_region(
    session: _EndpointSession,
    name: str,
    raw: Path,
    regions: tuple[str, ...],
    *,
    exact_copies: bool = True,
) -> None:
    """Exactly one AMI of the image in each region, tagged as checked, and the snapshot it
    was registered from holds the disk: every written block is compared with the image."""
    (primary,) = _amis(session, regions[0], name)
    tags = _tags(primary)
    assert tags["osbake:product_name"] == f"org.osbake:{name}:bookworm:amd64"
    assert tags["osbake:verified"].startswith(tags["osbake:snapshot"])
    assert _snapshot_disk(session, tags["osbake:snapshot"], raw.stat().st_size) == raw.read_bytes()
    for region in regions[1:]:
        (copy,) = _amis(session, region, name)
        assert _tags(copy)["osbake:source"] == tags["osbake:source"]
        if exact_copies:
            assert _tags(copy)["osbake:verified"] == f"copy of {primary['ImageId']} in {regions[0]}"
        else:  # a copy of a second copy that was deregistered since: the same image
            assert _tags(copy)["osbake:verified"].startswith("copy of ami-")
    # No other snapshot of the image is left (interrupted or losing syncs delete theirs).
    snapshots = session.client("ec2", regions[0]).describe_snapshots(
        OwnerIds=["self"],
        Filters=[{"Name": "tag:osbake:product_name", "Values": [tags["osbake:product_name"]]}],
    )["Snapshots"]
    assert [s["SnapshotId"] for s in snapshots] == [tags["osbake:snapshot"]]


@pytest.mark.parametrize("caches", [1, 2], ids=["one-cache", "two-caches"])
def test_two_syncs_into_ec2_leave_one_checked_ami_per_region(
    moto_endpoint: str, tmp_path: Path, caches: int
) -> None:
    name = f"race{caches}"
    raw, _ = _disk(tmp_path, name)
    regions = ("eu-west-1", "us-east-1")
    spec = "ec2:" + ",".join(regions)
    with http_server(tmp_path / "repo", rate=RATE) as url:
        if caches == 1:
            runs = osbake_sync_together(
                [[url, spec], [url, spec]], _env(moto_endpoint, tmp_path / "cache")
            )
        else:
            runs = []
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "osbake", "sync", url, spec],
                    env=_env(moto_endpoint, tmp_path / f"cache{n}"),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for n in range(2)
            ]
            for proc in procs:
                out, err = proc.communicate(timeout=300)
                runs.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr
    _assert_one_checked_ami_per_region(
        _EndpointSession(moto_endpoint), name, raw, regions, exact_copies=caches == 1
    )
    if caches == 1:
        assert any("waiting for another sync" in r.stderr for r in runs)
        assert sorted(r.stdout.split(" transferred")[0][-1] for r in runs) == ["0", "1"]


def test_a_damaged_snapshot_is_never_registered(moto_endpoint: str, tmp_path: Path) -> None:
    """One block arrives damaged (moto takes the checksum at face value, so only reading
    the blocks back finds it): the sync fails (exit 4), deletes the snapshot and registers
    nothing; the next sync makes a good AMI."""
    raw, _ = _disk(tmp_path, "damaged")
    session = _EndpointSession(moto_endpoint)

    def damage(params: dict[str, Any], **_: Any) -> None:
        if params.get("BlockIndex") == 4:
            data = bytearray(params["BlockData"])
            data[1000] ^= 0xFF
            params["BlockData"] = bytes(data)

    session.session.events.register("provide-client-params.ebs.PutSnapshotBlock", damage)
    with http_server(tmp_path / "repo") as url:
        with pytest.raises(
            VerifyError, match=r"does not match the image: 1 blocks differ \(first: 4\)"
        ):
            sync(url, Ec2Target(["eu-west-1"], session=session), staging=tmp_path / "stage")
        assert session.params("RegisterImage") == []
        assert _amis(session, "eu-west-1", "damaged") == []
        (snapshot,) = {p["SnapshotId"] for p in session.params("PutSnapshotBlock")}
        gone = session.client("ec2", "eu-west-1").describe_snapshots(OwnerIds=["self"])
        assert snapshot not in {s["SnapshotId"] for s in gone["Snapshots"]}

        session.session.events.unregister("provide-client-params.ebs.PutSnapshotBlock", damage)
        sync(url, Ec2Target(["eu-west-1"], session=session), staging=tmp_path / "stage")
    _assert_one_checked_ami_per_region(session, "damaged", raw, ("eu-west-1",))


@pytest.mark.parametrize("tags", ["untagged", "unchecked"])
def test_an_ami_from_an_unchecked_snapshot_is_never_taken_as_there(
    moto_endpoint: str, tmp_path: Path, tags: str
) -> None:
    """An AMI of the image's name that osbake registered without checking its snapshot (an
    older osbake, the race of issue 15) is deregistered and replaced, never reported present."""
    name = f"stale{tags}"
    raw, _ = _disk(tmp_path, name)
    session = _EndpointSession(moto_endpoint)
    ec2 = session.client("ec2", "eu-west-1")
    stale = ec2.register_image(
        Name=f"{name}-bookworm-amd64-20261120",
        Description=f"{name}-bookworm-amd64-20261120 (osbake sync of org.osbake:{name})",
    )["ImageId"]
    if tags == "unchecked":
        identity = {
            "osbake:content_id": "org.osbake:daily:download",
            "osbake:product_name": f"org.osbake:{name}:bookworm:amd64",
            "osbake:version_name": "20261120",
            "osbake:item_name": "disk1.img",
        }
        ec2.create_tags(
            Resources=[stale], Tags=[{"Key": k, "Value": v} for k, v in identity.items()]
        )
    with http_server(tmp_path / "repo") as url:
        run = subprocess.run(
            [sys.executable, "-m", "osbake", "sync", url, "ec2:eu-west-1"],
            env=_env(moto_endpoint, tmp_path / "cache"),
            capture_output=True,
            text=True,
            check=False,
        )
    assert run.returncode == 0, run.stderr
    assert "1 items selected, 0 already in ec2:eu-west-1, 1 to transfer" in run.stderr
    assert f"deregistered {stale}" in run.stderr
    assert "its snapshot was never checked against the image" in run.stderr
    _assert_one_checked_ami_per_region(session, name, raw, ("eu-west-1",))
    assert stale not in {i["ImageId"] for i in _amis(session, "eu-west-1", name)}


def test_adding_a_region_copies_the_ami_without_downloading_again(
    moto_endpoint: str, tmp_path: Path
) -> None:
    raw, _ = _disk(tmp_path, "regions")
    env = _env(moto_endpoint, tmp_path / "cache")
    with http_server(tmp_path / "repo") as url:
        first = osbake_sync_together([[url, "ec2:eu-west-1"]], env)[0]
        assert first.returncode == 0, first.stderr
        RangeHandler.requests.clear()
        more = osbake_sync_together([[url, "ec2:eu-west-1,ap-southeast-2,us-west-2"]], env)[0]
    assert more.returncode == 0, more.stderr
    assert [p for p, _ in RangeHandler.requests if p.endswith(".qcow2")] == []
    assert "copied" in more.stderr and "to transfer" in more.stderr
    session = _EndpointSession(moto_endpoint)
    _assert_one_checked_ami_per_region(
        session, "regions", raw, ("eu-west-1", "ap-southeast-2", "us-west-2")
    )


def test_a_complete_download_of_a_killed_sync_is_used_again_after_it_verifies(
    moto_endpoint: str, tmp_path: Path
) -> None:
    """SIGKILL while the snapshot goes up: the next sync deletes that snapshot, checks the
    complete download the killed one left in the cache and uses it (no download)."""
    raw, _ = _disk(tmp_path, "resumed", blocks=40)
    cache = tmp_path / "cache"
    session = _EndpointSession(moto_endpoint)
    ec2 = session.client("ec2", "eu-west-1")
    uploading = [
        {"Name": "tag:osbake:product_name", "Values": ["org.osbake:resumed:bookworm:amd64"]},
        {"Name": "tag:osbake:state", "Values": ["uploading"]},
    ]
    port = int(moto_endpoint.rsplit(":", 1)[1])
    with http_server(tmp_path / "repo") as url, throttled_proxy(port, RATE) as slow:
        proc = subprocess.Popen(
            [sys.executable, "-m", "osbake", "sync", url, "ec2:eu-west-1"],
            env=_env(f"http://127.0.0.1:{slow}", cache),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not ec2.describe_snapshots(OwnerIds=["self"], Filters=uploading)["Snapshots"]:
                assert proc.poll() is None, "the sync ended before it could be killed"
                assert time.monotonic() < deadline, "no snapshot was started"
                time.sleep(0.2)
            time.sleep(1.0)  # some blocks are up
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        (left,) = ec2.describe_snapshots(OwnerIds=["self"], Filters=uploading)["Snapshots"]
        staged = [p for p in (cache / "sync").iterdir() if p.name.endswith("resumed.qcow2")]
        assert len(staged) == 1  # the complete download

        RangeHandler.requests.clear()
        again = osbake_sync_together([[url, "ec2:eu-west-1"]], _env(moto_endpoint, cache))[0]
    assert again.returncode == 0, again.stderr
    assert [p for p, _ in RangeHandler.requests if p.endswith(".qcow2")] == []
    assert "the complete download of an earlier run matches the stream" in again.stderr
    assert f"deleted snapshot {left['SnapshotId']}" in again.stderr
    _assert_one_checked_ami_per_region(session, "resumed", raw, ("eu-west-1",))
    assert sorted(p.name for p in (cache / "sync").iterdir()) == []
