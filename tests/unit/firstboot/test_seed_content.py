"""What goes into NoCloud and ConfigDrive seeds (no volume is written here)."""

from __future__ import annotations

import email
import json
from pathlib import Path

import pytest
import yaml

from osbake.errors import UsageError
from osbake.firstboot import CONFIGDRIVE_VERSION, SeedFormat, seed_content


def cloud_config(data: bytes) -> dict:
    text = data.decode()
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def test_nocloud_has_user_data_and_meta_data_at_its_root() -> None:
    content = seed_content(format="nocloud-iso", hostname="web1")
    assert sorted(content.files) == ["meta-data", "user-data"]
    meta = yaml.safe_load(content.files["meta-data"])
    assert meta == {"instance-id": content.instance_id, "local-hostname": "web1"}
    assert content.files["user-data"].startswith(b"#cloud-config\n")
    assert content.label == "cidata"
    assert SeedFormat.NOCLOUD_VFAT.label == "CIDATA"


def test_configdrive_layout_and_meta_data(make_key) -> None:
    key = make_key()
    content = seed_content(format="configdrive", hostname="web1", ssh_keys=[key])
    versions = ("latest", CONFIGDRIVE_VERSION)
    expected = {
        f"openstack/{v}/{name}"
        for v in versions
        for name in ("meta_data.json", "user_data", "vendor_data.json")
    }
    assert set(content.files) == expected
    meta = json.loads(content.files["openstack/latest/meta_data.json"])
    assert meta["uuid"] == content.instance_id
    assert meta["hostname"] == "web1"
    assert meta["name"] == "web1"
    assert list(meta["public_keys"].values()) == [key]
    assert (
        content.files[f"openstack/{CONFIGDRIVE_VERSION}/meta_data.json"]
        == content.files["openstack/latest/meta_data.json"]
    )
    assert json.loads(content.files["openstack/latest/vendor_data.json"]) == {}
    assert content.label == "config-2"


def test_keys_without_user_go_to_the_default_user(make_key) -> None:
    key = make_key()
    content = seed_content(format="nocloud-iso", ssh_keys=[key])
    assert yaml.safe_load(content.files["meta-data"])["public-keys"] == [key]
    assert cloud_config(content.files["user-data"]) == {}


def test_user_is_created_with_the_keys(make_key) -> None:
    key = make_key()
    content = seed_content(format="nocloud-iso", ssh_keys=[key], user="ops")
    config = cloud_config(content.files["user-data"])
    assert config["users"] == [
        {
            "name": "ops",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "shell": "/bin/bash",
            "lock_passwd": True,
            "ssh_authorized_keys": [key],
        }
    ]
    assert "public-keys" not in yaml.safe_load(content.files["meta-data"])


def test_user_is_merged_into_the_users_cloud_config(make_key) -> None:
    user_data = "#cloud-config\nruncmd:\n  - echo hi\nusers:\n  - default\n"
    content = seed_content(user_data=user_data, user="ops", ssh_keys=[make_key()])
    config = cloud_config(content.files["user-data"])
    assert config["runcmd"] == ["echo hi"]
    assert config["users"][0] == "default"
    assert config["users"][1]["name"] == "ops"


def test_keys_join_an_existing_entry_of_the_user(make_key) -> None:
    first, second = make_key(seed=1), make_key(seed=2)
    user_data = f"#cloud-config\nusers:\n  - name: ops\n    ssh_authorized_keys: ['{first}']\n"
    content = seed_content(user_data=user_data, user="ops", ssh_keys=[second])
    users = cloud_config(content.files["user-data"])["users"]
    assert len(users) == 1
    assert users[0]["ssh_authorized_keys"] == [first, second]


def test_user_data_is_kept_verbatim_when_nothing_is_added() -> None:
    user_data = "#cloud-config\n# a comment that must survive\nruncmd: [ls]\n"
    content = seed_content(user_data=user_data)
    assert content.files["user-data"] == user_data.encode()


def test_script_and_user_become_a_multipart_message(make_key) -> None:
    script = "#!/bin/sh\necho from-script\n"
    content = seed_content(user_data=script, user="ops", ssh_keys=[make_key()])
    message = email.message_from_bytes(content.files["user-data"])
    assert message.is_multipart()
    parts = [p for p in message.walk() if not p.is_multipart()]
    types = [p.get_content_type() for p in parts]
    assert types == ["text/x-shellscript", "text/cloud-config"]
    assert parts[0].get_payload(decode=True) == script.encode()
    assert b"name: ops" in parts[1].get_payload(decode=True)


def test_instance_id_is_derived_from_the_content() -> None:
    one = seed_content(hostname="a")
    assert one.instance_id == seed_content(hostname="a").instance_id
    assert one.instance_id != seed_content(hostname="b").instance_id
    # The same inputs give the same instance in both datasources.
    assert one.instance_id == seed_content(format="configdrive", hostname="a").instance_id


def test_instance_id_flag_and_meta_data_file(tmp_path: Path) -> None:
    meta = tmp_path / "meta.yaml"
    meta.write_text("instance-id: from-file\nlocal-hostname: filehost\nplacement: rack1\n")
    content = seed_content(meta_data=meta)
    data = yaml.safe_load(content.files["meta-data"])
    assert data["instance-id"] == "from-file"
    assert data["local-hostname"] == "filehost"
    assert data["placement"] == "rack1"
    content = seed_content(meta_data=meta, instance_id="from-flag", hostname="flaghost")
    data = yaml.safe_load(content.files["meta-data"])
    assert (data["instance-id"], data["local-hostname"]) == ("from-flag", "flaghost")


def test_openstack_meta_data_keys_are_translated(make_key) -> None:
    key = make_key()
    meta = json.dumps({"uuid": "u-1", "hostname": "h1", "public_keys": {"k": key}, "x": 1})
    nocloud = yaml.safe_load(seed_content(meta_data=meta).files["meta-data"])
    assert nocloud == {"instance-id": "u-1", "local-hostname": "h1", "public-keys": [key], "x": 1}
    drive = seed_content(format="configdrive", meta_data=meta)
    data = json.loads(drive.files["openstack/latest/meta_data.json"])
    assert (data["uuid"], data["hostname"], data["x"]) == ("u-1", "h1", 1)


def test_bad_key_in_meta_data() -> None:
    with pytest.raises(UsageError, match="not an ssh public key"):
        seed_content(meta_data="public-keys: ['nonsense']\n")


def test_vendor_data_in_both_formats() -> None:
    vendor = "#cloud-config\npackages: [htop]\n"
    nocloud = seed_content(vendor_data=vendor)
    assert nocloud.files["vendor-data"] == vendor.encode()
    drive = seed_content(format="configdrive", vendor_data=vendor)
    data = json.loads(drive.files["openstack/latest/vendor_data.json"])
    assert data == {"cloud-init": vendor}
    raw = seed_content(format="configdrive", vendor_data='{"cloud-init": "#cloud-config\\n"}')
    assert json.loads(raw.files["openstack/latest/vendor_data.json"]) == {
        "cloud-init": "#cloud-config\n"
    }


def test_network_config_for_each_format() -> None:
    netplan = "network:\n  version: 2\n  ethernets:\n    eth0: {dhcp4: true}\n"
    nocloud = seed_content(network_config=netplan)
    assert yaml.safe_load(nocloud.files["network-config"]) == {
        "version": 2,
        "ethernets": {"eth0": {"dhcp4": True}},
    }
    with pytest.raises(UsageError, match=r"network_data\.json"):
        seed_content(format="configdrive", network_config=netplan)
    openstack = '{"links": [{"id": "l0", "type": "phy", "name": "ens3"}], "networks": []}'
    drive = seed_content(format="configdrive", network_config=openstack)
    assert json.loads(drive.files["openstack/latest/network_data.json"])["links"][0]["id"] == "l0"
    assert f"openstack/{CONFIGDRIVE_VERSION}/network_data.json" in drive.files


def test_unknown_format() -> None:
    with pytest.raises(UsageError, match="unknown seed format"):
        seed_content(format="floppy")


def test_bad_flags_are_refused_before_anything_else() -> None:
    with pytest.raises(UsageError, match="host name"):
        seed_content(hostname="bad_name")
    with pytest.raises(UsageError, match="user name"):
        seed_content(user="Root")
