"""`osbake seed` with the real tools: volumes blkid recognises, files read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from osbake.firstboot import CONFIGDRIVE_VERSION, make_seed, read_volume

pytestmark = pytest.mark.integration


def blkid(path: Path) -> dict[str, str]:
    """TYPE and LABEL as ds-identify and cloud-init's datasources see them."""
    out = subprocess.run(
        ["blkid", "-p", "-o", "export", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops@test", "-f", folder / "id"],
        check=True,
    )
    return folder / "id.pub"


def osbake(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "osbake", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


USER_DATA = "#cloud-config\nruncmd:\n  - echo osbake-seed-ran > /dev/ttyS0\n"


@pytest.mark.parametrize(
    ("fmt", "fs", "label"),
    [
        ("nocloud-iso", "iso9660", "cidata"),
        ("nocloud-vfat", "vfat", "CIDATA"),
        ("configdrive", "iso9660", "config-2"),
    ],
)
def test_seed_command_writes_a_volume_cloud_init_finds(
    tmp_path: Path, key: Path, fmt: str, fs: str, label: str
) -> None:
    user_data = tmp_path / "user-data.yaml"
    user_data.write_text(USER_DATA)
    seed = tmp_path / f"seed-{fmt}.img"
    result = osbake(
        "seed",
        "-o",
        seed,
        "--format",
        fmt,
        "--user-data",
        user_data,
        "--hostname",
        "web1",
        "--ssh-key",
        key,
        "--user",
        "ops",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["label"] == label
    found = blkid(seed)
    assert (found["TYPE"], found["LABEL"]) == (fs, label)

    files = read_volume(seed)
    pub = key.read_text().strip()
    if fmt == "configdrive":
        assert f"openstack/{CONFIGDRIVE_VERSION}/meta_data.json" in files
        meta = json.loads(files["openstack/latest/meta_data.json"])
        assert meta["uuid"] == summary["instance_id"]
        assert meta["hostname"] == "web1"
        user_data_out = files["openstack/latest/user_data"]
        assert json.loads(files["openstack/latest/vendor_data.json"]) == {}
    else:
        meta = yaml.safe_load(files["meta-data"])
        assert meta == {"instance-id": summary["instance_id"], "local-hostname": "web1"}
        user_data_out = files["user-data"]
    config = yaml.safe_load(user_data_out)
    assert user_data_out.startswith(b"#cloud-config\n")
    assert config["runcmd"] == ["echo osbake-seed-ran > /dev/ttyS0"]
    assert config["users"][0]["name"] == "ops"
    assert config["users"][0]["ssh_authorized_keys"] == [pub]


def test_seeds_are_reproducible(tmp_path: Path) -> None:
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    for fmt in ("nocloud-iso", "nocloud-vfat", "configdrive"):
        first, second = tmp_path / f"{fmt}-1", tmp_path / f"{fmt}-2"
        assert (
            osbake("seed", "-o", first, "--format", fmt, "--hostname", "a", env=env).returncode == 0
        )
        assert (
            osbake("seed", "-o", second, "--format", fmt, "--hostname", "a", env=env).returncode
            == 0
        )
        assert first.read_bytes() == second.read_bytes(), fmt


def test_network_and_vendor_data(tmp_path: Path) -> None:
    network = tmp_path / "net.yaml"
    network.write_text(
        "version: 2\nethernets:\n  id0:\n    match: {name: 'en*'}\n    dhcp4: true\n"
    )
    vendor = tmp_path / "vendor.yaml"
    vendor.write_text("#cloud-config\npackages: [htop]\n")
    seed = make_seed(
        tmp_path / "seed.iso", network_config=network, vendor_data=vendor, instance_id="i-1"
    )
    files = read_volume(seed)
    assert sorted(files) == ["meta-data", "network-config", "user-data", "vendor-data"]
    assert yaml.safe_load(files["network-config"])["ethernets"]["id0"]["dhcp4"] is True
    assert yaml.safe_load(files["meta-data"]) == {"instance-id": "i-1"}

    drive_net = tmp_path / "network_data.json"
    drive_net.write_text(
        json.dumps(
            {
                "links": [{"id": "l0", "type": "phy", "ethernet_mac_address": "52:54:00:12:34:56"}],
                "networks": [{"id": "n0", "link": "l0", "type": "ipv4_dhcp"}],
                "services": [],
            }
        )
    )
    drive = make_seed(
        tmp_path / "drive.iso", format="configdrive", network_config=drive_net, vendor_data=vendor
    )
    files = read_volume(drive)
    assert json.loads(files["openstack/latest/network_data.json"])["networks"][0]["link"] == "l0"
    assert json.loads(files["openstack/latest/vendor_data.json"]) == {
        "cloud-init": vendor.read_text()
    }


def test_bad_input_leaves_nothing_behind(tmp_path: Path) -> None:
    user_data = tmp_path / "user-data"
    user_data.write_text("#cloud-config\nruncmd: [unclosed\n")
    out = tmp_path / "out"
    out.mkdir()
    result = osbake("seed", "-o", out / "seed.iso", "--user-data", user_data)
    assert result.returncode == 2
    assert f"{user_data}:" in result.stderr
    assert "not valid cloud-config YAML" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(out.iterdir()) == []


def test_missing_output_folder(tmp_path: Path) -> None:
    result = osbake("seed", "-o", tmp_path / "no" / "seed.iso")
    assert result.returncode == 2
    assert "does not exist" in result.stderr
