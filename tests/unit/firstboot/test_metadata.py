"""The EC2 and OpenStack metadata service, over real HTTP on the loopback."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from osbake.arch import Arch
from osbake.errors import UsageError
from osbake.firstboot import datasource
from osbake.firstboot.metadata import (
    GUEST_MAC,
    MAX_BODY,
    TOKEN_HEADER,
    TOKEN_TTL_HEADER,
    Datasource,
    MetadataService,
    metadata_routes,
)
from osbake.firstboot.seed import seed_content

USER_DATA = b"#cloud-config\nruncmd: [echo hello]\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def content(key: str, **changes: object) -> object:
    fields: dict[str, object] = {
        "format": "configdrive",
        "hostname": "web-1",
        "ssh_keys": [key],
        "user_data": USER_DATA,
        "instance_id": "i-0123456789abcdef0",
    }
    fields.update(changes)
    return seed_content(**fields)  # type: ignore[arg-type]


@pytest.fixture
def serve(make_key: Callable[..., str]) -> Iterator[Callable[..., MetadataService]]:
    with contextlib.ExitStack() as stack:

        def start(kind: str, **options: object) -> MetadataService:
            made = content(make_key())
            return stack.enter_context(MetadataService(kind, made, **options))  # type: ignore[arg-type]

        yield start


def request(
    service: MetadataService, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=5)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def token(service: MetadataService, ttl: str = "21600") -> str:
    status, body = request(service, "PUT", "/latest/api/token", {TOKEN_TTL_HEADER: ttl})
    assert status == 200
    return body.decode()


def test_ec2_imdsv2_token_then_metadata(serve: Callable[..., MetadataService]) -> None:
    service = serve("ec2")
    auth = {TOKEN_HEADER: token(service)}
    assert request(service, "GET", "/2021-03-23/meta-data/instance-id", auth) == (
        200,
        b"i-0123456789abcdef0",
    )
    assert request(service, "GET", "/latest/meta-data/local-hostname", auth) == (200, b"web-1")
    assert request(service, "GET", "/latest/meta-data/placement/availability-zone", auth)[0] == 200
    status, listing = request(service, "GET", "/latest/meta-data/public-keys/", auth)
    assert (status, listing) == (200, b"0=key-1")
    status, key = request(service, "GET", "/latest/meta-data/public-keys/0/openssh-key", auth)
    assert status == 200 and key.startswith(b"ssh-ed25519 ")
    assert request(service, "GET", "/latest/user-data", auth) == (200, USER_DATA)
    status, document = request(service, "GET", "/latest/dynamic/instance-identity/document", auth)
    assert status == 200
    assert json.loads(document)["instanceId"] == "i-0123456789abcdef0"
    status, macs = request(service, "GET", "/2021-03-23/meta-data/network/interfaces/macs/", auth)
    assert (status, macs) == (200, f"{GUEST_MAC}/".encode())
    # An interface with a vpc-id: cloud-init takes one without it for EC2-Classic and
    # renders the network again at every boot.
    nic = f"/latest/meta-data/network/interfaces/macs/{GUEST_MAC}"
    status, listing = request(service, "GET", nic + "/", auth)
    assert status == 200 and b"vpc-id" in listing.split(b"\n")
    assert request(service, "GET", nic + "/vpc-id", auth) == (200, b"vpc-00000000")


def test_ec2_v1_refused_when_v2_required(serve: Callable[..., MetadataService]) -> None:
    service = serve("ec2")
    assert request(service, "GET", "/latest/meta-data/instance-id")[0] == 401
    assert request(service, "GET", "/2009-04-04/meta-data/instance-id")[0] == 401


def test_ec2_v1_answered_when_allowed(serve: Callable[..., MetadataService]) -> None:
    service = serve("ec2", imdsv2=False)
    assert request(service, "GET", "/2009-04-04/meta-data/instance-id") == (
        200,
        b"i-0123456789abcdef0",
    )
    # A token that is sent is still checked.
    assert request(service, "GET", "/latest/meta-data/", {TOKEN_HEADER: "forged"})[0] == 401


def test_ec2_wrong_and_expired_tokens(serve: Callable[..., MetadataService]) -> None:
    clock = Clock()
    service = serve("ec2", clock=clock)
    good = token(service, ttl="60")
    assert request(service, "GET", "/latest/meta-data/", {TOKEN_HEADER: good})[0] == 200
    assert request(service, "GET", "/latest/meta-data/", {TOKEN_HEADER: good + "x"})[0] == 401
    clock.now += 61
    assert request(service, "GET", "/latest/meta-data/", {TOKEN_HEADER: good})[0] == 401


@pytest.mark.parametrize("ttl", [None, "0", "21601", "ten"])
def test_ec2_token_needs_a_valid_ttl(
    serve: Callable[..., MetadataService], ttl: str | None
) -> None:
    service = serve("ec2")
    headers = {} if ttl is None else {TOKEN_TTL_HEADER: ttl}
    assert request(service, "PUT", "/latest/api/token", headers)[0] == 400
    assert request(service, "GET", "/latest/api/token", {TOKEN_TTL_HEADER: "60"})[0] == 405


def test_not_found_and_no_traversal(serve: Callable[..., MetadataService]) -> None:
    service = serve("ec2")
    auth = {TOKEN_HEADER: token(service)}
    for path in (
        "/latest/meta-data/nothing",
        "/latest/meta-data/../../etc/passwd",
        "/latest//meta-data/instance-id",
        "/openstack/latest/meta_data.json",  # not an OpenStack service
    ):
        assert request(service, "GET", path, auth)[0] == 404, path
    assert request(service, "POST", "/latest/meta-data/", auth)[0] == 405
    assert request(service, "GET", "/" + "a" * 600, auth)[0] == 400


def test_request_size_is_bounded(serve: Callable[..., MetadataService]) -> None:
    service = serve("openstack")
    with socket.create_connection(("127.0.0.1", service.port), timeout=5) as raw:
        raw.sendall(b"PUT /openstack HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
        assert raw.recv(64).startswith(b"HTTP/1.0 413")


def test_openstack_json_shape(serve: Callable[..., MetadataService]) -> None:
    service = serve("openstack")
    status, versions = request(service, "GET", "/openstack")
    assert status == 200 and b"latest" in versions.split()
    for version in versions.split():
        status, body = request(service, "GET", f"/openstack/{version.decode()}/meta_data.json")
        assert status == 200
        meta = json.loads(body)
        assert meta["uuid"] == "i-0123456789abcdef0"
        assert meta["hostname"] == "web-1" and meta["name"] == "web-1"
        assert next(iter(meta["public_keys"].values())).startswith("ssh-ed25519 ")
    assert request(service, "GET", "/openstack/latest/user_data") == (200, USER_DATA)
    assert json.loads(request(service, "GET", "/openstack/latest/vendor_data.json")[1]) == {}
    # The EC2-compatible tree cloud-init also reads, without tokens.
    assert request(service, "GET", "/latest/meta-data/instance-id") == (
        200,
        b"i-0123456789abcdef0",
    )
    assert request(service, "PUT", "/latest/api/token", {TOKEN_TTL_HEADER: "60"})[0] == 405


def test_openstack_network_data_served(make_key: Callable[..., str]) -> None:
    network = {"links": [{"id": "eth0", "type": "phy", "ethernet_mac_address": GUEST_MAC}]}
    made = content(make_key(), network_config=json.dumps(network).encode())
    routes = metadata_routes(Datasource.OPENSTACK, made)  # type: ignore[arg-type]
    assert json.loads(routes["openstack/latest/network_data.json"]) == network


def test_stopped_service_leaves_nothing(serve: Callable[..., MetadataService]) -> None:
    service = serve("ec2")
    port = service.port
    relay = Path(service.qemu_user_net()[1].split(" ")[3])
    assert relay.is_file()
    service.stop()
    assert not relay.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_qemu_options() -> None:
    assert Datasource("ec2").served and not Datasource("nocloud").served


def test_smbios_says_which_cloud(serve: Callable[..., MetadataService]) -> None:
    ec2 = " ".join(serve("ec2").qemu_args())
    assert "manufacturer=Amazon EC2" in ec2
    serial = ec2.split("serial=")[1].split(",")[0]
    assert serial.startswith("ec2") and f"uuid={serial}" in ec2
    assert "product=OpenStack Nova" in " ".join(serve("openstack").qemu_args())


def test_datasource_none_takes_no_inputs(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack, pytest.raises(UsageError, match="none"):
        datasource.prepare("none", datasource.Inputs(hostname="web"), tmp_path, stack)


def test_bad_hostname_refused_before_serving(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack, pytest.raises(UsageError, match="--hostname"):
        datasource.prepare("ec2", datasource.Inputs(hostname="bad_name!"), tmp_path, stack)


def test_the_identity_document_names_the_guests_architecture() -> None:
    made = seed_content(format="configdrive", hostname="web1")  # type: ignore[arg-type]
    for arch, expected in ((Arch.AMD64, "x86_64"), (Arch.ARM64, "arm64"), (Arch.I386, "i386")):
        routes = metadata_routes(Datasource.EC2, made, arch)  # type: ignore[arg-type]
        document = json.loads(routes["latest/dynamic/instance-identity/document"])
        assert document["architecture"] == expected
