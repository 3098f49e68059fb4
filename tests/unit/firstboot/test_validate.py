"""Checks on seed inputs: what cloud-init would ignore or choke on is refused, with a place."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbake.errors import UsageError
from osbake.firstboot import validate
from osbake.firstboot.validate import Input, load_input


def item(text: str | bytes, name: str = "user-data", file: Path | None = None) -> Input:
    data = text.encode() if isinstance(text, str) else text
    return Input(data, name, file)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("#cloud-config\nruncmd: [ls]\n", "cloud-config"),
        ("  #Cloud-Config\n", "cloud-config"),
        ("#cloud-config-archive\n- type: text/x-shellscript\n", "cloud-config-archive"),
        ("#!/bin/sh\necho hi\n", "script"),
        ("#include\nhttp://example.invalid/x\n", "include"),
        ("#cloud-boothook\n#!/bin/sh\n", "boothook"),
        ("## template: jinja\n#cloud-config\n", "jinja"),
        ('Content-Type: multipart/mixed; boundary="b"\nMIME-Version: 1.0\n', "mime"),
        (b"\x1f\x8b\x08\x00rest", "gzip"),
    ],
)
def test_user_data_kinds_follow_cloud_init(text: str | bytes, kind: str) -> None:
    assert validate.user_data_kind(item(text)) == kind


def test_yaml_without_header_is_refused_with_the_fix() -> None:
    with pytest.raises(UsageError) as caught:
        validate.user_data_kind(item("runcmd:\n  - ls\n", file=Path("ud.yaml")))
    assert "cloud-init would ignore it" in caught.value.message
    assert "add '#cloud-config' as its first line" in (caught.value.hint or "")
    assert str(caught.value.location) == "ud.yaml:1"


def test_byte_order_mark_hides_the_header() -> None:
    with pytest.raises(UsageError, match="byte order mark"):
        validate.user_data_kind(item("\ufeff#cloud-config\n"))


def test_empty_user_data_is_refused() -> None:
    with pytest.raises(UsageError, match="is empty"):
        validate.user_data_kind(item("  \n"))


def test_non_utf8_is_refused_with_its_line() -> None:
    with pytest.raises(UsageError, match="not UTF-8") as caught:
        validate.user_data_kind(item(b"#cloud-config\nname: \xff\n", file=Path("u")))
    assert caught.value.location is not None
    assert caught.value.location.line == 2


def test_yaml_error_names_file_and_line() -> None:
    text = "#cloud-config\nruncmd:\n  - ls\nusers: [a\nbad: 1\n"
    with pytest.raises(UsageError, match="not valid cloud-config YAML") as caught:
        validate.check_user_data(item(text, file=Path("ud.yaml")))
    assert caught.value.location is not None
    assert caught.value.location.file == Path("ud.yaml")
    assert caught.value.location.line == 5


def test_tab_indentation_is_explained() -> None:
    with pytest.raises(UsageError) as caught:
        validate.check_user_data(item("#cloud-config\nruncmd:\n\t- ls\n"))
    assert "tabs" in (caught.value.hint or "")


def test_cloud_config_must_be_a_mapping() -> None:
    with pytest.raises(UsageError, match="not a mapping"):
        validate.check_user_data(item("#cloud-config\n- a\n- b\n"))


def test_runcmd_must_be_a_list() -> None:
    with pytest.raises(UsageError, match="'runcmd' must be a list") as caught:
        validate.check_user_data(item("#cloud-config\nhostname: a\nruncmd: ls -l\n"))
    assert caught.value.location is not None
    assert caught.value.location.line == 3


def test_keys_inside_users_are_checked(make_key) -> None:
    good = f"#cloud-config\nusers:\n  - name: a\n    ssh_authorized_keys: ['{make_key()}']\n"
    kind, config = validate.check_user_data(item(good))
    assert kind == "cloud-config"
    assert config is not None
    assert config["users"][0]["name"] == "a"
    bad = "#cloud-config\nusers:\n  - name: a\n    ssh_authorized_keys: ['ssh-rsa n*pe']\n"
    with pytest.raises(UsageError, match="not valid base64"):
        validate.check_user_data(item(bad))


def test_users_entry_without_name() -> None:
    with pytest.raises(UsageError, match="has no 'name'"):
        validate.check_user_data(item("#cloud-config\nusers:\n  - shell: /bin/sh\n"))


def test_empty_cloud_config_is_fine() -> None:
    assert validate.check_user_data(item("#cloud-config\n")) == ("cloud-config", {})


def test_cloud_config_archive_must_be_a_list() -> None:
    with pytest.raises(UsageError, match="not a list of parts"):
        validate.check_user_data(item("#cloud-config-archive\na: 1\n"))


# -- ssh keys ------------------------------------------------------------------------------------


def test_public_keys_of_every_type_are_accepted(make_key) -> None:
    for kind in ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "sk-ssh-ed25519@openssh.com"):
        line = make_key(kind)
        assert validate.parse_ssh_key_line(line, item("", "k")) == line


def test_authorized_keys_options_are_allowed(make_key) -> None:
    line = 'from="10.0.0.0/8",no-pty ' + make_key()
    assert validate.parse_ssh_key_line(line, item("", "k")) == line


def test_key_file_with_comments_and_blanks(make_key) -> None:
    text = f"# my keys\n\n{make_key(seed=1)}\n{make_key(seed=2)}\n"
    assert len(validate.parse_ssh_keys(item(text, "--ssh-key"))) == 2


def test_private_key_is_refused_clearly() -> None:
    text = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n"
    with pytest.raises(UsageError, match="PRIVATE") as caught:
        validate.parse_ssh_keys(item(text, "--ssh-key", Path("id_ed25519")))
    assert ".pub" in (caught.value.hint or "")


def test_key_whose_blob_does_not_match_its_type(make_key) -> None:
    blob = make_key("ssh-rsa").split()[1]
    with pytest.raises(UsageError, match="does not match its type"):
        validate.parse_ssh_key_line(f"ssh-ed25519 {blob} x", item("", "k"))


def test_cut_key_is_reported_with_its_line(make_key) -> None:
    cut = make_key()[:40]
    with pytest.raises(UsageError, match="incomplete") as caught:
        validate.parse_ssh_keys(item(f"{make_key()}\n{cut}\n", "--ssh-key", Path("keys")))
    assert caught.value.location is not None
    assert caught.value.location.line == 2


def test_file_without_keys() -> None:
    with pytest.raises(UsageError, match="no ssh public key"):
        validate.parse_ssh_keys(item("# nothing\n", "--ssh-key"))


def test_not_a_key() -> None:
    with pytest.raises(UsageError, match="not an ssh public key"):
        validate.parse_ssh_key_line("hello world", item("", "k"))


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["web1", "web-1.example.org", "A1", "x" * 63])
def test_good_hostnames(name: str) -> None:
    assert validate.check_hostname(name) == name


@pytest.mark.parametrize("name", ["-web", "web_1", "a..b", "x" * 64, "", "web 1", "web-"])
def test_bad_hostnames(name: str) -> None:
    with pytest.raises(UsageError, match="not a valid host name"):
        validate.check_hostname(name)


@pytest.mark.parametrize("name", ["ops", "_svc", "deploy-bot", "a1$"])
def test_good_user_names(name: str) -> None:
    assert validate.check_user_name(name) == name


@pytest.mark.parametrize("name", ["Ops", "1ops", "o p", "x" * 33, "a:b"])
def test_bad_user_names(name: str) -> None:
    with pytest.raises(UsageError, match="not a valid user name"):
        validate.check_user_name(name)


@pytest.mark.parametrize("value", ["", "a b", "a/b", "x" * 256])
def test_bad_instance_ids(value: str) -> None:
    with pytest.raises(UsageError, match="instance id"):
        validate.check_instance_id(value)


# -- network -------------------------------------------------------------------------------------


def test_network_config_v2_keeps_its_keys() -> None:
    config = validate.check_network_config(
        item("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n", "network-config")
    )
    assert config["ethernets"]["eth0"]["dhcp4"] is True


def test_network_key_is_unwrapped() -> None:
    config = validate.check_network_config(
        item("network:\n  version: 1\n  config: []\n", "network-config")
    )
    assert config == {"version": 1, "config": []}


def test_network_config_needs_a_version() -> None:
    with pytest.raises(UsageError, match="'version: 1' or 'version: 2'"):
        validate.check_network_config(item("ethernets: {}\n", "network-config"))


def test_network_config_v2_unknown_key() -> None:
    with pytest.raises(UsageError, match="unknown key"):
        validate.check_network_config(item("version: 2\nethernet: {}\n", "network-config"))


def test_network_data_json() -> None:
    text = (
        '{"links": [{"id": "l0", "type": "phy", "ethernet_mac_address": "52:54:00:12:34:56"}],'
        ' "networks": [{"id": "n0", "link": "l0", "type": "ipv4_dhcp"}], "services": []}'
    )
    config = validate.check_network_data_json(item(text, "network-config"))
    assert config["links"][0]["id"] == "l0"


def test_netplan_for_a_config_drive_says_what_to_do() -> None:
    with pytest.raises(UsageError, match=r"not OpenStack network_data\.json") as caught:
        validate.check_network_data_json(item("version: 2\nethernets: {}\n", "network-config"))
    assert "nocloud" in (caught.value.hint or "")


def test_network_data_link_needs_mac_or_name() -> None:
    text = '{"links": [{"id": "l0", "type": "phy"}], "networks": []}'
    with pytest.raises(UsageError, match="neither 'ethernet_mac_address' nor 'name'"):
        validate.check_network_data_json(item(text, "network-config"))


def test_network_data_network_must_name_a_link() -> None:
    text = (
        '{"links": [{"id": "l0", "type": "phy", "name": "ens3"}],'
        ' "networks": [{"id": "n0", "link": "l9", "type": "ipv4_dhcp"}]}'
    )
    with pytest.raises(UsageError, match="needs a 'link'"):
        validate.check_network_data_json(item(text, "network-config"))


# -- reading inputs ------------------------------------------------------------------------------


def test_load_input_from_file_and_content(tmp_path: Path) -> None:
    path = tmp_path / "ud"
    path.write_text("#cloud-config\n")
    assert load_input(path, "user-data").file == path
    assert load_input("#!/bin/sh\n", "user-data").data == b"#!/bin/sh\n"
    assert load_input(b"x", "user-data").file is None


def test_missing_input_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_input(tmp_path / "nope", "user-data")
    with pytest.raises(UsageError, match="is a directory"):
        load_input(tmp_path, "user-data")
