"""Checks on what goes into a seed, before anything is written.

cloud-init is forgiving in the worst way: user-data it cannot classify is
skipped with a line in a log nobody reads, and a YAML error in a #cloud-config
turns the whole file into nothing. So every input is checked here, and a problem
is reported with the file, the line and how to fix it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbake import formats
from osbake.errors import Location, UsageError
from osbake.recipe import yamlpos

# cloud-init's user-data type prefixes (cloudinit/handlers: INCLUSION_TYPES_MAP),
# longest first so that "#cloud-config-archive" is not taken for "#cloud-config".
USER_DATA_KINDS = (
    ("#cloud-config-archive", "cloud-config-archive"),
    ("#cloud-config-jsonp", "cloud-config-jsonp"),
    ("#cloud-config", "cloud-config"),
    ("#cloud-boothook", "boothook"),
    ("#include-once", "include"),
    ("#include", "include"),
    ("#part-handler", "part-handler"),
    ("#upstart-job", "upstart-job"),
    ("## template: jinja", "jinja"),
    ("#!", "script"),
)
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Input:
    """One input of a seed: its bytes and where they came from (for messages)."""

    data: bytes
    name: str  # the seed file it becomes, e.g. "user-data"
    file: Path | None = None

    def where(self, line: int | None = None, column: int | None = None) -> Location:
        if self.file is not None:
            return Location(file=self.file, line=line, column=column)
        return Location(key=self.name, line=line, column=column)

    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = self.data[: exc.start].count(b"\n") + 1
            raise UsageError(
                f"{self.name} is not UTF-8 text (bad byte at offset {exc.start})",
                hint="save the file as UTF-8",
                location=self.where(line),
            ) from None


# A seed input (user-data, meta-data, a key file, ...) larger than this is refused
# unread: cloud-init's datasources carry far less (OpenStack limits user-data to 64 KiB).
MAX_INPUT_BYTES = 16 * 1024 * 1024


def load_input(source: Path | str | bytes, name: str) -> Input:
    """Read a seed input: a Path is a file to read; str or bytes is the content itself."""
    if isinstance(source, Path):
        data = yamlpos.read_bounded(
            source, MAX_INPUT_BYTES, what=f"{name} input", error=UsageError, regular=False
        )
        return Input(data, name, source)
    data = source.encode("utf-8", errors="surrogatepass") if isinstance(source, str) else source
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(
            f"{name} is larger than the limit of {MAX_INPUT_BYTES // (1024 * 1024)} MiB",
            hint=f"seed inputs may be at most {MAX_INPUT_BYTES // (1024 * 1024)} MiB",
        )
    return Input(bytes(data), name)


def parse_yaml(item: Input, *, what: str, plain: bool = False) -> Any:
    """Parse YAML (JSON is YAML too), turning errors into a message with a line.

    The same bounds as for recipes apply: aliases that expand to too many values, or
    nesting too deep, are refused before anything is built.
    """
    return yamlpos.load_data(
        item.text(),
        where=item.where(),
        error=UsageError,
        what=what,
        subject=item.name,
        plain=plain,
        hint="fix the YAML syntax there (indent with spaces, not tabs; quote values "
        "that contain ': ' or start with a special character)",
    )


def user_data_kind(item: Input) -> str:
    """What cloud-init will take this user-data for; raises if it would ignore it."""
    if item.data.startswith(GZIP_MAGIC):
        return "gzip"
    text = item.text()
    if text.startswith("\ufeff"):
        raise UsageError(
            f"{item.name} starts with a byte order mark, which hides its header from cloud-init",
            hint="save the file as UTF-8 without BOM",
            location=item.where(1),
        )
    stripped = text.lstrip()
    if not stripped:
        raise UsageError(
            f"{item.name} is empty",
            hint="write '#cloud-config' and your settings into it, or leave the option out",
            location=item.where(),
        )
    # cloud-init compares the start case-insensitively, after leading white space.
    head = stripped.lower()
    if "mime-version:" in head[:4096] or head.startswith("content-type:"):
        return "mime"
    for prefix, kind in USER_DATA_KINDS:
        if head.startswith(prefix):
            return kind
    first = stripped.splitlines()[0]
    hint = (
        "cloud-init only acts on user-data that starts with a header such as "
        "'#cloud-config', '#!/bin/sh' or '#include'"
    )
    try:
        parsed = yamlpos.load_data(stripped, error=UsageError)
    except UsageError:
        parsed = None
    if isinstance(parsed, dict):
        hint = "this looks like cloud-config: add '#cloud-config' as its first line"
    raise UsageError(
        f"{item.name} does not start with a header cloud-init knows "
        f"(first line: {first[:60]!r}); cloud-init would ignore it",
        hint=hint,
        location=item.where(1),
    )


def check_user_data(item: Input) -> tuple[str, dict[str, Any] | None]:
    """Validate user-data; return its kind and, for #cloud-config, the parsed mapping."""
    kind = user_data_kind(item)
    if kind == "cloud-config":
        config = parse_yaml(item, what="cloud-config YAML")
        if config is None:
            return kind, {}
        if not isinstance(config, dict):
            raise UsageError(
                f"{item.name} is #cloud-config but its YAML is a {type(config).__name__}, "
                "not a mapping of settings",
                hint="write settings as 'key: value' lines, e.g. 'runcmd: [...]'",
                location=item.where(2),
            )
        check_cloud_config(config, item)
        return kind, config
    if kind == "cloud-config-archive":
        archive = parse_yaml(item, what="cloud-config-archive YAML")
        if not isinstance(archive, list):
            raise UsageError(
                f"{item.name} is #cloud-config-archive but its YAML is not a list of parts",
                location=item.where(2),
                hint="write '- content: ...' items, or use #cloud-config",
            )
    if kind == "cloud-config-jsonp":
        body = item.text().split("\n", 1)[1] if "\n" in item.text() else ""
        try:
            json.loads(body)
        except ValueError as exc:
            raise UsageError(
                f"{item.name} is #cloud-config-jsonp but not valid JSON: {exc}",
                location=item.where(),
                hint="fix the JSON after the first line",
            ) from None
    return kind, None


def check_cloud_config(config: dict[str, Any], item: Input) -> None:
    """The mistakes that make cloud-init quietly skip a module."""
    for key in ("runcmd", "bootcmd", "packages", "write_files"):
        value = config.get(key)
        if value is not None and not isinstance(value, list):
            raise UsageError(
                f"{item.name}: '{key}' must be a list, not a {type(value).__name__}",
                hint=f"write it as '{key}:' followed by '- ...' items",
                location=_key_location(item, key),
            )
    keys = config.get("ssh_authorized_keys")
    if keys is not None:
        if not isinstance(keys, list):
            raise UsageError(
                f"{item.name}: 'ssh_authorized_keys' must be a list of public keys",
                location=_key_location(item, "ssh_authorized_keys"),
                hint="write it as ssh_authorized_keys: ['ssh-ed25519 AAAA... you@host']",
            )
        for key in keys:
            parse_ssh_key_line(str(key), item, _key_location(item, "ssh_authorized_keys"))
    users = config.get("users")
    for key in ("hostname", "fqdn"):
        if key in config:
            _check_name(formats.hostname, config[key], item, key)
    if users is None:
        return
    if isinstance(users, str):  # "default" or names separated by commas
        users = [u.strip() for u in users.split(",") if u.strip()]
    if isinstance(users, dict):
        users = [users]
    if not isinstance(users, list):
        raise UsageError(
            f"{item.name}: 'users' must be a list of users",
            location=_key_location(item, "users"),
            hint="write users: [default, {name: ops, ...}]",
        )
    for entry in users:
        if isinstance(entry, str):
            if entry != "default":
                _check_name(formats.user_name, entry, item, "users")
        elif isinstance(entry, dict):
            if "name" not in entry:
                raise UsageError(
                    f"{item.name}: an entry of 'users' has no 'name'",
                    location=_key_location(item, "users"),
                    hint="give every user a name: {name: ops, ...}",
                )
            _check_name(formats.user_name, entry["name"], item, "users")
            groups = entry.get("groups")
            if isinstance(groups, str):
                groups = [g.strip() for g in groups.split(",")]
            for group in groups if isinstance(groups, list) else []:
                _check_name(formats.group_name, group, item, "users")
            keys = entry.get("ssh_authorized_keys")
            if keys is not None and not isinstance(keys, list):
                raise UsageError(
                    f"{item.name}: 'ssh_authorized_keys' of user {formats.shown(entry['name'])} "
                    "must be a list of public keys",
                    hint="write it as ssh_authorized_keys: ['ssh-ed25519 AAAA... you@host']",
                    location=_key_location(item, "users"),
                )
            for key in keys or []:
                parse_ssh_key_line(str(key), item, _key_location(item, "users"))
        else:
            raise UsageError(
                f"{item.name}: an entry of 'users' must be a user name or a mapping",
                location=_key_location(item, "users"),
                hint="write users: [default, {name: ops, ...}]",
            )


def _check_name(check: Any, value: Any, item: Input, key: str) -> None:
    try:
        check(value if isinstance(value, str) else str(value))
    except formats.FormatError as exc:
        raise UsageError(
            f"{item.name}: '{key}': {exc.message}",
            hint=exc.hint,
            location=_key_location(item, key),
        ) from None


def _key_location(item: Input, key: str) -> Location:
    """The line where a top-level key is written (best effort: the first match)."""
    try:
        lines = item.text().splitlines()
    except UsageError:
        return item.where()
    for number, line in enumerate(lines, start=1):
        if line.startswith(f"{key}:"):
            return item.where(number)
    return item.where()


# -- ssh keys ------------------------------------------------------------------------------


def parse_ssh_key_line(line: str, item: Input, where: Location | None = None) -> str:
    """Check one public key line (authorized_keys syntax); return it normalised."""
    try:
        return formats.ssh_public_key(line, item.name)
    except formats.FormatError as exc:
        raise UsageError(exc.message, hint=exc.hint, location=where or item.where()) from None


def parse_ssh_keys(item: Input) -> list[str]:
    """Every public key in a file (authorized_keys style: comments and blanks allowed)."""
    keys: list[str] = []
    for number, line in enumerate(item.text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keys.append(parse_ssh_key_line(line, item, item.where(number)))
    if not keys:
        raise UsageError(
            f"{item.name}: no ssh public key in it",
            hint="give a .pub file (e.g. ~/.ssh/id_ed25519.pub)",
            location=item.where(),
        )
    return keys


# -- names -------------------------------------------------------------------------------


def check_hostname(name: str, flag: str = "--hostname") -> str:
    try:
        return formats.hostname(name)
    except formats.FormatError as exc:
        raise UsageError(f"{flag}: {exc.message}", hint=exc.hint) from None


def check_user_name(name: str, flag: str = "--user") -> str:
    try:
        return formats.user_name(name)
    except formats.FormatError as exc:
        raise UsageError(f"{flag}: {exc.message}", hint=exc.hint) from None


def check_instance_id(value: str, flag: str = "--instance-id") -> str:
    if (
        not value
        or len(value) > 255
        or any(c.isspace() or not c.isprintable() for c in value)
        or "/" in value
    ):
        raise UsageError(
            f"{flag} {value!r} is not a usable instance id",
            hint="use 1 to 255 characters without spaces or '/', e.g. a UUID",
        )
    return value


def check_mapping(item: Input, *, what: str, plain: bool = False) -> dict[str, Any]:
    """A YAML or JSON document that must be a mapping (meta-data, network config).

    With `plain` (a document written out as JSON), only what JSON has is accepted."""
    value = parse_yaml(item, what=what, plain=plain)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(
            f"{item.name} must be a mapping of keys, not a {type(value).__name__}",
            hint="write it as 'key: value' lines (YAML) or a JSON object",
            location=item.where(1),
        )
    return value


def check_network_config(item: Input) -> dict[str, Any]:
    """A cloud-init network config (version 1 or 2); returns it without the 'network:' key."""
    config = check_mapping(item, what="network config YAML")
    if set(config) == {"network"} and isinstance(config["network"], dict):
        # Older cloud-init reads network-config only without the top-level key.
        config = config["network"]
    version = config.get("version")
    if version not in (1, 2):
        raise UsageError(
            f"{item.name} has no 'version: 1' or 'version: 2'",
            hint="cloud-init network config starts with 'version: 2' (netplan style) "
            "followed by 'ethernets:', or 'version: 1' followed by 'config:'",
            location=item.where(1),
        )
    if version == 1 and not isinstance(config.get("config"), list):
        raise UsageError(
            f"{item.name}: a version 1 network config needs a 'config:' list",
            location=item.where(),
            hint="or write a version 2 (netplan style) config",
        )
    if version == 2:
        known = {
            "version",
            "ethernets",
            "bonds",
            "bridges",
            "vlans",
            "wifis",
            "renderer",
        }
        unknown = sorted(set(config) - known)
        if unknown:
            raise UsageError(
                f"{item.name}: unknown key(s) in a version 2 network config: " + ", ".join(unknown),
                hint="version 2 takes " + ", ".join(sorted(known - {"version"})),
                location=item.where(),
            )
    return config


def check_network_data_json(item: Input) -> dict[str, Any]:
    """An OpenStack network_data.json (links, networks, services)."""
    config = check_mapping(item, what="network_data JSON", plain=True)
    if "links" not in config:
        hint = "a config drive carries OpenStack network_data.json: {links, networks, services}"
        if "version" in config or "network" in config:
            hint = (
                "this is a cloud-init (netplan style) network config, which a config drive "
                "cannot carry: use a NoCloud seed (--format nocloud-iso) for it, or write "
                "OpenStack network_data.json {links, networks, services}"
            )
        raise UsageError(
            f"{item.name} is not OpenStack network_data.json (it has no 'links')",
            hint=hint,
            location=item.where(),
        )
    for key in ("links", "networks", "services"):
        if key in config and not isinstance(config[key], list):
            raise UsageError(
                f"{item.name}: '{key}' must be a list",
                hint="network_data.json has lists of links, networks and services",
                location=item.where(),
            )
    for link in config["links"]:
        if (
            not isinstance(link, dict)
            or not isinstance(link.get("id"), str | int)
            or not isinstance(link.get("type"), str)
        ):
            raise UsageError(
                f"{item.name}: every link needs an 'id' and a 'type'",
                hint="write each link as {id: eth0, type: phy, ethernet_mac_address: ...}",
                location=item.where(),
            )
    ids = {link["id"] for link in config["links"]}
    for link in config["links"]:
        if (
            link["type"] not in ("bond", "vlan")
            and not link.get("ethernet_mac_address")
            and not link.get("name")
        ):
            raise UsageError(
                f"{item.name}: link {link['id']!r} has neither 'ethernet_mac_address' nor "
                "'name', so cloud-init cannot tell which interface it is",
                hint="add the interface's MAC address as ethernet_mac_address "
                "(or a 'name' such as ens3)",
                location=item.where(),
            )
    for network in config.get("networks", []):
        if (
            not isinstance(network, dict)
            or not isinstance(network.get("link"), str | int)
            or network["link"] not in ids
        ):
            raise UsageError(
                f"{item.name}: every network needs a 'link' that names one of the links' ids",
                location=item.where(),
                hint="set each network's link to the id of a link",
            )
    return config
