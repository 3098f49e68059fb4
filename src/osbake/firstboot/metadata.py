"""A cloud metadata service (EC2 or OpenStack) for one boot, served on the host's loopback.

cloud-init's Ec2 and OpenStack datasources read their instance from an HTTP service
at 169.254.169.254. osbake serves one from the same inputs `osbake seed` takes (the
files of a ConfigDrive seed, already checked by `seed_content`), on 127.0.0.1 only,
with fixed content: every answer is decided before the server starts, a request is
looked up by its exact path (no files are read, so nothing can be traversed to), and
requests are small and time-bounded.

The guest reaches it through QEMU's user network: `net=169.254.0.0/16` puts the
metadata address inside the guest's network, and `guestfwd` for 169.254.169.254:80
starts a tiny relay (`cmd:`) per guest connection that copies bytes to the loopback
server. `qemu_user_net()` and `qemu_args()` give QEMU what it needs (SMBIOS strings
included, so that cloud-init's ds-identify takes the machine for that cloud).

EC2: `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` hands out
IMDSv2 tokens; with `imdsv2` (the default, as on a new EC2 instance) every other
request needs a live token in `X-aws-ec2-metadata-token`, else 401. The tree is
`/<version>/meta-data/...` (instance-id, hostname, local-hostname, public-keys,
placement, network interfaces), `/<version>/user-data` and
`/<version>/dynamic/instance-identity/document`.

OpenStack: `/openstack/<version>/meta_data.json`, `user_data`, `vendor_data.json`,
`network_data.json` (as on a config drive), and the EC2-compatible tree without tokens.
"""

from __future__ import annotations

import http.server
import json
import secrets
import shlex
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

from osbake.arch import Arch
from osbake.errors import UsageError
from osbake.firstboot.seed import CONFIGDRIVE_VERSION, SeedContent, SeedFormat

METADATA_ADDRESS = "169.254.169.254"
# QEMU's user network moved to the link-local range. QEMU keeps the low 16 bits of its
# default addresses (10.0.2.x): the gateway is 169.254.2.2, the DNS server 169.254.2.3
# and the guest's DHCP address 169.254.2.15 (seen in the guest's ci-info table).
GUEST_NET = "169.254.0.0/16"
GUEST_IP = "169.254.2.15"
GUEST_MAC = "52:54:00:12:34:56"  # QEMU's first NIC
EC2_VERSIONS = ("1.0", "2009-04-04", "2016-09-02", "2018-09-24", "2021-03-23", "latest")
OPENSTACK_VERSIONS = (CONFIGDRIVE_VERSION, "latest")
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TOKEN_TTL = 21600
MAX_TOKENS = 256
MAX_PATH = 512
MAX_BODY = 1024
REQUEST_SECONDS = 10.0
ZONE = "osbake-1a"
REGION = "osbake-1"
INSTANCE_TYPE = "osbake.qemu"
UUID_NAMESPACE = uuid.UUID("0b5a3c1e-6f0e-4f7e-9a52-5d3e9c0a7b21")

# Run by QEMU (guestfwd cmd:) for each guest connection: copies the connection (its
# stdin/stdout) to the loopback server and back. Standalone: no osbake imports.
RELAY = """\
import os, select, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
reading = True
while True:
    ready, _, _ = select.select(([0] if reading else []) + [s], [], [], 30)
    if not ready:
        break
    if 0 in ready:
        data = os.read(0, 65536)
        if data:
            s.sendall(data)
        else:
            s.shutdown(socket.SHUT_WR)
            reading = False
    if s in ready:
        data = s.recv(65536)
        if not data:
            break
        while data:
            data = data[os.write(1, data):]
"""


class Datasource(StrEnum):
    """How `osbake boot` gives the guest its instance."""

    NOCLOUD = "nocloud"
    CONFIGDRIVE = "configdrive"
    EC2 = "ec2"
    OPENSTACK = "openstack"
    NONE = "none"

    @property
    def served(self) -> bool:
        """Whether the instance comes from a metadata service (else a seed or nothing)."""
        return self in (Datasource.EC2, Datasource.OPENSTACK)

    @property
    def cloud_init_name(self) -> str:
        """The datasource cloud-init reports (DataSource<name>)."""
        return {
            "nocloud": "NoCloud",
            "configdrive": "ConfigDrive",
            "ec2": "Ec2",
            "openstack": "OpenStack",
            "none": "None",
        }[self.value]


def metadata_routes(
    kind: Datasource, content: SeedContent, arch: Arch = Arch.AMD64
) -> dict[str, bytes]:
    """Every path the service answers (without the leading '/'), with its body.

    `content` is a ConfigDrive seed's content (`seed_content(format="configdrive")`).
    Directories are listed with and without their trailing '/'.
    """
    if content.format is not SeedFormat.CONFIGDRIVE:
        raise ValueError("the metadata service is made from a configdrive seed's content")
    if not kind.served:
        raise ValueError(f"{kind} is not served over HTTP")
    latest = f"openstack/{CONFIGDRIVE_VERSION}/"
    meta: dict[str, Any] = json.loads(content.files[latest + "meta_data.json"])
    user_data = content.files[latest + "user_data"]
    files: dict[str, bytes] = {}
    for version in EC2_VERSIONS[1:]:
        for path, body in _ec2_files(
            meta, user_data, arch, extended=version != "2009-04-04"
        ).items():
            files[f"{version}/{path}"] = body
    if kind is Datasource.OPENSTACK:
        for version in OPENSTACK_VERSIONS:
            for name in ("meta_data.json", "user_data", "vendor_data.json", "network_data.json"):
                found = content.files.get(latest + name)
                if found is not None:
                    files[f"openstack/{version}/{name}"] = found
    routes = dict(files)
    for path, listing in _listings(files).items():
        routes[path] = routes[path + "/"] = listing
    keys = _public_keys_listing(meta)
    if keys is not None:
        for version in EC2_VERSIONS[1:]:
            routes[f"{version}/meta-data/public-keys"] = keys
            routes[f"{version}/meta-data/public-keys/"] = keys
    routes[""] = "\n".join(EC2_VERSIONS).encode()
    if kind is Datasource.OPENSTACK:
        routes["openstack"] = routes["openstack/"] = "\n".join(OPENSTACK_VERSIONS).encode()
    return routes


def _ec2_files(
    meta: dict[str, Any], user_data: bytes, arch: Arch, *, extended: bool
) -> dict[str, bytes]:
    instance_id = str(meta["uuid"])
    hostname = str(meta.get("hostname") or "ip-" + GUEST_IP.replace(".", "-"))
    md = {
        "ami-id": "ami-00000000",
        "ami-launch-index": "0",
        "hostname": hostname,
        "instance-id": instance_id,
        "instance-type": INSTANCE_TYPE,
        "local-hostname": hostname,
        "local-ipv4": GUEST_IP,
        "mac": GUEST_MAC,
        "placement/availability-zone": ZONE,
        "reservation-id": "r-00000000",
        "security-groups": "default",
    }
    keys = list((meta.get("public_keys") or {}).items())
    for number, (_name, key) in enumerate(keys):
        md[f"public-keys/{number}/openssh-key"] = str(key)
    if extended:
        md["placement/region"] = REGION
        nic = f"network/interfaces/macs/{GUEST_MAC}"
        md[f"{nic}/device-number"] = "0"
        md[f"{nic}/local-ipv4s"] = GUEST_IP
        md[f"{nic}/mac"] = GUEST_MAC
        md[f"{nic}/subnet-ipv4-cidr-block"] = GUEST_NET
        # Every EC2 instance is in a VPC now. cloud-init takes an interface without
        # vpc-id for EC2-Classic (retired in 2023) and then renders and restarts the
        # network again in its network stage, at every boot.
        md[f"{nic}/interface-id"] = "eni-00000000"
        md[f"{nic}/owner-id"] = "000000000000"
        md[f"{nic}/security-group-ids"] = "sg-00000000"
        md[f"{nic}/security-groups"] = "default"
        md[f"{nic}/subnet-id"] = "subnet-00000000"
        md[f"{nic}/vpc-id"] = "vpc-00000000"
        md[f"{nic}/vpc-ipv4-cidr-block"] = GUEST_NET
        md[f"{nic}/vpc-ipv4-cidr-blocks"] = GUEST_NET
    identity = {
        "accountId": "000000000000",
        "architecture": arch.info.ec2 or arch.info.kernel,
        "availabilityZone": ZONE,
        "imageId": "ami-00000000",
        "instanceId": instance_id,
        "instanceType": INSTANCE_TYPE,
        "privateIp": GUEST_IP,
        "region": REGION,
        "version": "2017-09-30",
    }
    files = {f"meta-data/{k}": v.encode() for k, v in md.items()}
    files["user-data"] = user_data
    files["dynamic/instance-identity/document"] = (json.dumps(identity, indent=2) + "\n").encode()
    return files


def _public_keys_listing(meta: dict[str, Any]) -> bytes | None:
    """EC2 lists public keys as "<index>=<name>"; cloud-init then reads <index>/openssh-key."""
    keys = list((meta.get("public_keys") or {}).items())
    if not keys:
        return None
    return "\n".join(f"{n}={name}" for n, (name, _key) in enumerate(keys)).encode()


def _listings(files: dict[str, bytes]) -> dict[str, bytes]:
    children: dict[str, dict[str, None]] = {}
    for path in files:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            leaf = depth == len(parts) - 1
            children.setdefault(parent, {})[parts[depth] + ("" if leaf else "/")] = None
    listings: dict[str, bytes] = {}
    for parent, names in children.items():
        listings[parent] = "\n".join(names).encode()
    return listings


class MetadataService:
    """A metadata service for one boot: `with MetadataService(...) as service: boot(...)`.

    Binds an ephemeral port on 127.0.0.1; stopping it (leaving the `with`) shuts the
    server down, joins its thread and removes the relay script.
    """

    def __init__(
        self,
        kind: Datasource | str,
        content: SeedContent,
        *,
        imdsv2: bool = True,
        arch: Arch = Arch.AMD64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kind = Datasource(kind)
        self.content = content
        self.imdsv2 = imdsv2 and self.kind is Datasource.EC2
        self.clock = clock
        self.routes = metadata_routes(self.kind, content, arch)
        self.tokens: dict[str, float] = {}
        self.lock = threading.Lock()
        self.server: _Server | None = None
        self.thread: threading.Thread | None = None
        self.tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def port(self) -> int:
        if self.server is None:
            raise RuntimeError("the metadata service is not running")
        return int(self.server.server_address[1])

    def start(self) -> MetadataService:
        self.tmp = tempfile.TemporaryDirectory(prefix="osbake-metadata-")
        (Path(self.tmp.name) / "relay.py").write_text(RELAY)
        self.server = _Server(("127.0.0.1", 0), _Handler, self)
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.1,), name="osbake-metadata", daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=REQUEST_SECONDS + 5)
        if self.tmp is not None:
            self.tmp.cleanup()
        self.server = self.thread = self.tmp = None

    def __enter__(self) -> MetadataService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what QEMU needs ---------------------------------------------------------------

    def qemu_user_net(self) -> list[str]:
        """Options for QEMU's user network (`-nic user,...`) that reach this service."""
        if self.tmp is None:
            raise RuntimeError("the metadata service is not running")
        relay = Path(self.tmp.name) / "relay.py"
        command = " ".join(shlex.quote(a) for a in (sys.executable, "-I", "-S", str(relay)))
        command = f"{command} {self.port}".replace(",", ",,")
        return [f"net={GUEST_NET}", f"guestfwd=tcp:{METADATA_ADDRESS}:80-cmd:{command}"]

    def qemu_args(self) -> list[str]:
        """SMBIOS strings by which cloud-init's ds-identify recognises the cloud."""
        if self.kind is Datasource.EC2:
            # ds-identify and cloud-init take a machine whose product uuid and serial
            # both start with "ec2" (and are equal) for AWS.
            ec2 = "ec2" + str(uuid.uuid5(UUID_NAMESPACE, self.content.instance_id))[3:]
            return ["-smbios", f"type=1,manufacturer=Amazon EC2,serial={ec2},uuid={ec2}"]
        return [
            "-smbios",
            "type=1,manufacturer=OpenStack Foundation,product=OpenStack Nova",
            "-smbios",
            "type=3,asset=OpenStack Nova",
        ]

    # -- requests --------------------------------------------------------------------------

    def answer(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        """The status, body and content type for one request (no I/O)."""
        path = path.split("?", 1)[0].split("#", 1)[0]
        if len(path) > MAX_PATH or not path.startswith("/"):
            return 400, b"bad request\n", "text/plain"
        segments = path[1:].split("/")
        if any(s in (".", "..") for s in segments) or "//" in path:
            return 404, b"not found\n", "text/plain"
        key = path[1:]
        lower = {k.lower(): v for k, v in headers.items()}
        if self.kind is Datasource.EC2 and key == "latest/api/token":
            if method != "PUT":
                return 405, b"method not allowed\n", "text/plain"
            return self._new_token(lower.get(TOKEN_TTL_HEADER.lower()))
        if method != "GET":
            return 405, b"method not allowed\n", "text/plain"
        if self.kind is Datasource.EC2:
            token = lower.get(TOKEN_HEADER.lower())
            missing = token is None and self.imdsv2
            if missing or (token is not None and not self._token_valid(token)):
                return 401, b"unauthorized\n", "text/plain"
        body = self.routes.get(key)
        if body is None:
            return 404, b"not found\n", "text/plain"
        kind = "application/json" if key.endswith((".json", "/document")) else "text/plain"
        return 200, body, kind

    def _new_token(self, ttl_text: str | None) -> tuple[int, bytes, str]:
        try:
            ttl = int(ttl_text or "")
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= MAX_TOKEN_TTL:
            return 400, b"bad request: missing or invalid token TTL\n", "text/plain"
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self.lock:
            self.tokens = {t: e for t, e in self.tokens.items() if e > now}
            while len(self.tokens) >= MAX_TOKENS:
                del self.tokens[next(iter(self.tokens))]
            self.tokens[token] = now + ttl
        return 200, token.encode(), "text/plain"

    def _token_valid(self, token: str) -> bool:
        with self.lock:
            expiry = self.tokens.get(token)
        return expiry is not None and expiry > self.clock()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 16

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[http.server.BaseHTTPRequestHandler],
        service: MetadataService,
    ) -> None:
        self.service = service
        super().__init__(address, handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "osbake-metadata"
    sys_version = ""
    timeout = REQUEST_SECONDS
    server: _Server

    def do_GET(self) -> None:
        self._respond("GET")

    def do_PUT(self) -> None:
        self._respond("PUT")

    def do_HEAD(self) -> None:
        self._send(405, b"", "text/plain")

    def do_POST(self) -> None:
        self._respond("POST")

    def _respond(self, method: str) -> None:
        length_text = self.headers.get("Content-Length", "0")
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._send(413, b"request too large\n", "text/plain")
            return
        if length:
            self.rfile.read(length)
        status, body, kind = self.server.service.answer(method, self.path, dict(self.headers))
        self._send(status, body, kind)

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # library code does not print


def check_datasource(value: str) -> Datasource:
    try:
        return Datasource(value)
    except ValueError:
        raise UsageError(
            f"unknown datasource {value!r}",
            hint="choose one of: " + ", ".join(d.value for d in Datasource),
        ) from None
