"""What goes into a first-boot seed, and the seed volume itself.

Two datasources of cloud-init read a seed from a local disk, with no network:

- NoCloud: a vfat or iso9660 filesystem labelled `cidata` with `user-data` and
  `meta-data` (both required) at its root, and optionally `network-config` and
  `vendor-data`.
- ConfigDrive (OpenStack): a filesystem labelled `config-2` with
  `openstack/<version>/meta_data.json` (required, with a `uuid`), `user_data`,
  `vendor_data.json` and `network_data.json`. cloud-init reads the newest dated
  version it knows, else `latest`; osbake writes both.

`seed_content()` decides the files (pure, no I/O besides reading the inputs);
`make_seed()` writes them into a volume without root or mounts.
"""

from __future__ import annotations

import copy
import email.encoders
import email.generator
import email.message
import email.mime.multipart
import email.mime.nonmultipart
import email.parser
import email.policy
import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from osbake.errors import UsageError
from osbake.firstboot import validate
from osbake.firstboot.validate import Input

Source = Path | str | bytes

# The newest metadata version cloud-init knows (cloudinit/sources/helpers/openstack.py
# OS_VERSIONS); it picks it over `latest` when both are present.
CONFIGDRIVE_VERSION = "2018-08-27"
INSTANCE_NAMESPACE = uuid.UUID("8f1a5a55-0c1e-4d8a-9a56-2f0b5e0e7d11")

# user-data kinds (osbake.firstboot.validate) to MIME types cloud-init dispatches on.
MIME_TYPES = {
    "cloud-config": "text/cloud-config",
    "cloud-config-archive": "text/cloud-config-archive",
    "cloud-config-jsonp": "text/cloud-config-jsonp",
    "boothook": "text/cloud-boothook",
    "include": "text/x-include-url",
    "part-handler": "text/part-handler",
    "upstart-job": "text/upstart-job",
    "jinja": "text/jinja2",
    "script": "text/x-shellscript",
    "gzip": "application/x-gzip",
}


class SeedFormat(StrEnum):
    """The kinds of seed `osbake seed` writes."""

    NOCLOUD_ISO = "nocloud-iso"
    NOCLOUD_VFAT = "nocloud-vfat"
    CONFIGDRIVE = "configdrive"

    @property
    def filesystem(self) -> str:
        return "vfat" if self is SeedFormat.NOCLOUD_VFAT else "iso9660"

    @property
    def label(self) -> str:
        """The volume label cloud-init looks for (FAT labels are upper case by custom)."""
        if self is SeedFormat.CONFIGDRIVE:
            return "config-2"
        return "CIDATA" if self is SeedFormat.NOCLOUD_VFAT else "cidata"

    @property
    def datasource(self) -> str:
        return "ConfigDrive" if self is SeedFormat.CONFIGDRIVE else "NoCloud"


@dataclass
class SeedContent:
    """The files of a seed, by path inside the volume, and what they were made from."""

    format: SeedFormat
    instance_id: str
    files: dict[str, bytes] = field(default_factory=dict)
    hostname: str | None = None
    user: str | None = None

    @property
    def label(self) -> str:
        return self.format.label


def seed_content(
    *,
    format: SeedFormat | str = SeedFormat.NOCLOUD_ISO,
    user_data: Source | None = None,
    meta_data: Source | None = None,
    network_config: Source | None = None,
    vendor_data: Source | None = None,
    hostname: str | None = None,
    ssh_keys: Sequence[Source] = (),
    user: str | None = None,
    instance_id: str | None = None,
) -> SeedContent:
    """Check every input and compose the seed's files.

    Paths are read as files; str and bytes are taken as the content itself.
    `hostname` becomes the datasource's host name, `ssh_keys` go to the image's
    default user (meta-data public keys) or, with `user`, to a new user created
    by cloud-config (sudo without password, login shell bash) instead of it.
    The instance id defaults to a UUID derived from everything else, so the same
    inputs give the same seed and changed inputs make cloud-init run again.
    """
    fmt = _format(format)
    if hostname is not None:
        validate.check_hostname(hostname)
    if user is not None:
        validate.check_user_name(user)
    if instance_id is not None:
        validate.check_instance_id(instance_id)

    keys: list[str] = []
    for number, source in enumerate(ssh_keys, start=1):
        name = "--ssh-key" if isinstance(source, Path) else f"ssh key {number}"
        keys += validate.parse_ssh_keys(validate.load_input(source, name))

    user_item = validate.load_input(user_data, "user-data") if user_data is not None else None
    user_bytes = _compose_user_data(user_item, user, keys)

    meta = _meta_data(meta_data, fmt)
    if hostname is not None:
        meta["local-hostname"] = hostname
    if keys and user is None:
        meta["public-keys"] = _unique([*meta.get("public-keys", []), *keys])
    if instance_id is not None:
        meta["instance-id"] = instance_id

    vendor = _vendor_data(vendor_data, fmt)
    network = _network(network_config, fmt)

    if "instance-id" not in meta:
        meta["instance-id"] = _derived_instance_id(meta, user_bytes, vendor, network)
    content = SeedContent(
        fmt, str(meta["instance-id"]), hostname=meta.get("local-hostname"), user=user
    )
    if fmt is SeedFormat.CONFIGDRIVE:
        content.files = _configdrive_files(meta, user_bytes, vendor, network)
    else:
        content.files = _nocloud_files(meta, user_bytes, vendor, network)
    return content


def _format(value: SeedFormat | str) -> SeedFormat:
    try:
        return SeedFormat(value)
    except ValueError:
        raise UsageError(
            f"unknown seed format {value!r}",
            hint="choose one of: " + ", ".join(f.value for f in SeedFormat),
        ) from None


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# -- user-data ---------------------------------------------------------------------------------


def _user_entry(user: str, keys: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": user,
        "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "shell": "/bin/bash",
        "lock_passwd": True,
    }
    if keys:
        entry["ssh_authorized_keys"] = keys
    return entry


def _dump_cloud_config(config: dict[str, Any]) -> bytes:
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=4096)
    return ("#cloud-config\n" + body).encode("utf-8")


def _compose_user_data(item: Input | None, user: str | None, keys: list[str]) -> bytes:
    if item is None:
        if user is None:
            return b"#cloud-config\n{}\n"
        return _dump_cloud_config({"users": [_user_entry(user, keys)]})
    kind, config = validate.check_user_data(item)
    if user is None:
        return item.data
    if config is not None:
        return _dump_cloud_config(_merge_user(config, user, keys))
    return _multipart(item, kind, _dump_cloud_config({"users": [_user_entry(user, keys)]}))


def _merge_user(config: dict[str, Any], user: str, keys: list[str]) -> dict[str, Any]:
    """Add the user to the cloud-config's `users` (or its ssh keys to a same-named entry)."""
    merged = copy.deepcopy(config)
    users = merged.get("users")
    if users is None:
        listed: list[Any] = []
    elif isinstance(users, list):
        listed = users
    elif isinstance(users, dict):
        listed = [users]
    else:  # a string: "default" or "a, b"
        listed = [u.strip() for u in str(users).split(",") if u.strip()]
    for entry in listed:
        if isinstance(entry, dict) and entry.get("name") == user:
            entry["ssh_authorized_keys"] = _unique(
                [*(entry.get("ssh_authorized_keys") or []), *keys]
            )
            break
    else:
        listed.append(_user_entry(user, keys))
    merged["users"] = listed
    return merged


def _multipart(item: Input, kind: str, cloud_config: bytes) -> bytes:
    """The user's user-data and osbake's cloud-config as one MIME message cloud-init splits."""
    ours = _mime_part("text/cloud-config", cloud_config, "osbake-user.cfg")
    if kind == "mime":
        parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(item.data)
        if parsed.is_multipart():
            parsed.attach(ours)
            return _flatten(parsed)
        parts = [parsed, ours]
    else:
        parts = [_mime_part(MIME_TYPES[kind], item.data, "user-data"), ours]
    outer = email.mime.multipart.MIMEMultipart(
        boundary="osbake-" + hashlib.sha256(item.data + cloud_config).hexdigest()[:24]
    )
    for part in parts:
        outer.attach(part)
    return _flatten(outer)


def _mime_part(content_type: str, data: bytes, filename: str) -> email.message.Message:
    maintype, subtype = content_type.split("/", 1)
    part = email.mime.nonmultipart.MIMENonMultipart(maintype, subtype)
    if maintype == "text":
        part.set_payload(data.decode("utf-8"), charset="utf-8")
    else:
        part.set_payload(data)
        email.encoders.encode_base64(part)
    part.add_header("Content-Disposition", "attachment", filename=filename)
    return part


def _flatten(message: email.message.Message) -> bytes:
    buffer = io.BytesIO()
    email.generator.BytesGenerator(buffer, mangle_from_=False, maxheaderlen=0).flatten(message)
    return buffer.getvalue()


# -- meta-data, vendor-data, network ---------------------------------------------------------

# ConfigDrive's meta_data.json keys and their NoCloud names; either spelling is accepted.
OPENSTACK_KEYS = {"uuid": "instance-id", "hostname": "local-hostname", "public_keys": "public-keys"}


def _meta_data(source: Source | None, fmt: SeedFormat) -> dict[str, Any]:
    if source is None:
        return {}
    what = "meta_data JSON" if fmt is SeedFormat.CONFIGDRIVE else "meta-data YAML"
    item = validate.load_input(source, "meta-data")
    meta = validate.check_mapping(item, what=what, plain=fmt is SeedFormat.CONFIGDRIVE)
    normal: dict[str, Any] = {}
    for key, value in meta.items():
        normal[OPENSTACK_KEYS.get(key, key)] = value
    if "instance-id" in normal:
        normal["instance-id"] = validate.check_instance_id(
            str(normal["instance-id"]), flag=f"{item.file or 'meta-data'}: instance-id"
        )
    if "local-hostname" in normal:
        validate.check_hostname(
            str(normal["local-hostname"]), flag=f"{item.file or 'meta-data'}: local-hostname"
        )
    if "public-keys" in normal:
        keys = normal["public-keys"]
        if isinstance(keys, dict):
            keys = list(keys.values())
        elif isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, list):
            raise UsageError(
                "meta-data: public-keys must be a list of ssh public keys",
                location=item.where(),
                hint="write public-keys: ['ssh-ed25519 AAAA... you@host']",
            )
        normal["public-keys"] = [validate.parse_ssh_key_line(str(k), item) for k in keys]
    return normal


def _vendor_data(source: Source | None, fmt: SeedFormat) -> bytes | None:
    if source is None:
        return None
    item = validate.load_input(source, "vendor-data")
    if fmt is not SeedFormat.CONFIGDRIVE:
        validate.check_user_data(item)
        return item.data
    # vendor_data.json: a JSON object whose "cloud-init" key holds the vendor-data, or
    # vendor-data (cloud-config, script...) that osbake wraps into one.
    if item.data.lstrip().startswith(b"{"):
        value = validate.check_mapping(item, what="vendor_data JSON", plain=True)
        return _json(value)
    validate.check_user_data(item)
    return _json({"cloud-init": item.text()})


def _network(source: Source | None, fmt: SeedFormat) -> Any:
    if source is None:
        return None
    item = validate.load_input(source, "network-config")
    if fmt is SeedFormat.CONFIGDRIVE:
        return validate.check_network_data_json(item)
    return validate.check_network_config(item)


def _derived_instance_id(
    meta: dict[str, Any], user_data: bytes, vendor: bytes | None, network: Any
) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    digest.update(b"\0" + user_data + b"\0" + (vendor or b""))
    digest.update(b"\0" + json.dumps(network, sort_keys=True, default=str).encode())
    return str(uuid.uuid5(INSTANCE_NAMESPACE, digest.hexdigest()))


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=False) + "\n").encode("utf-8")


def _nocloud_files(
    meta: dict[str, Any], user_data: bytes, vendor: bytes | None, network: Any
) -> dict[str, bytes]:
    ordered = {"instance-id": meta["instance-id"]}
    ordered.update({k: v for k, v in meta.items() if k != "instance-id"})
    files = {
        "meta-data": yaml.safe_dump(ordered, sort_keys=False, width=4096).encode("utf-8"),
        "user-data": user_data,
    }
    if network is not None:
        files["network-config"] = yaml.safe_dump(network, sort_keys=False).encode("utf-8")
    if vendor is not None:
        files["vendor-data"] = vendor
    return files


def _configdrive_files(
    meta: dict[str, Any], user_data: bytes, vendor: bytes | None, network: Any
) -> dict[str, bytes]:
    back = {v: k for k, v in OPENSTACK_KEYS.items()}
    metadata: dict[str, Any] = {"uuid": meta["instance-id"]}
    if "local-hostname" in meta:
        metadata["hostname"] = meta["local-hostname"]
        metadata.setdefault("name", meta["local-hostname"])
    if meta.get("public-keys"):
        metadata["public_keys"] = {
            f"key-{n}": key for n, key in enumerate(meta["public-keys"], start=1)
        }
    for key, value in meta.items():
        if key not in ("instance-id", "local-hostname", "public-keys"):
            metadata[back.get(key, key)] = value
    files: dict[str, bytes] = {}
    for version in ("latest", CONFIGDRIVE_VERSION):
        base = f"openstack/{version}"
        files[f"{base}/meta_data.json"] = _json(metadata)
        files[f"{base}/user_data"] = user_data
        files[f"{base}/vendor_data.json"] = vendor if vendor is not None else _json({})
        if network is not None:
            files[f"{base}/network_data.json"] = _json(network)
    return files


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH if set (reproducible seeds), else now."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value and value.isdigit():
        return int(value)
    return int(time.time())
