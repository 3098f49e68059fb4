"""The formats of values that come from untrusted input (recipes, elements, seeds).

One definition per kind of value, used wherever such a value enters: the recipe
model, element options, element.yaml and `osbake seed`. Each check returns the
value (normalised where that is safe) or raises FormatError, whose message says
what is wrong and whose hint says how to write it. Values end up in files
(/etc/hosts, sources lists, fstab), command lines (useradd, apt-get, mkfs) and
user databases, so the formats are the conservative subsets every consumer
accepts: nothing a shell, a config-file parser or a line-oriented list file
could read as a separator.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any


class FormatError(ValueError):
    """A value does not have the format it needs; `hint` says how to write it."""

    def __init__(
        self, message: str, hint: str | None = None, path: tuple[str | int, ...] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.path = path  # where inside the value (a list index, a record field)

    def __str__(self) -> str:
        return self.message


def shown(value: Any, limit: int = 60) -> str:
    """A value for a message: quoted, control characters escaped, long ones cut."""
    if not isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "…"
    cut = value if len(value) <= limit else value[:limit]
    text = repr(cut)
    return text + ("…" if cut is not value else "")


CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CONTROL_BUT_LAYOUT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tab and newline allowed


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise FormatError(
            f"{what} must be a string, not {type_name(value)}",
            "write the value as text (quote it if YAML would read it as something else)",
        )
    return value


def type_name(value: Any) -> str:
    return {
        "str": "a string",
        "int": "a number",
        "float": "a number",
        "bool": "a boolean",
        "list": "a list",
        "dict": "a mapping",
        "NoneType": "empty",
    }.get(type(value).__name__, type(value).__name__)


def _bounded(value: str, what: str, limit: int) -> str:
    if len(value) > limit:
        raise FormatError(
            f"{what} is {len(value)} characters long; the limit is {limit}",
            f"shorten it to at most {limit} characters",
        )
    return value


# -- text --------------------------------------------------------------------------------------


def line(given: Any, what: str = "the value", limit: int = 4096) -> str:
    """One line of text: no control characters (no newline, tab, NUL, escape)."""
    text = _bounded(_string(given, what), what, limit)
    found = CONTROL.search(text)
    if found:
        raise FormatError(
            f"{what} {shown(text)} contains the control character {found.group()!r}",
            "write it on one line, without tabs, newlines or other control characters",
        )
    return text


def text(given: Any, what: str = "the value", limit: int = 65536) -> str:
    """Free text: several lines and tabs allowed, other control characters (NUL, escape) not."""
    value = _bounded(_string(given, what), what, limit)
    found = CONTROL_BUT_LAYOUT.search(value)
    if found:
        raise FormatError(
            f"{what} {shown(value)} contains the control character {found.group()!r}",
            "remove it (only newlines and tabs may appear in text)",
        )
    return value


def script_line(given: Any, what: str = "the command", limit: int = 65536) -> str:
    """A shell command of `run:`: any text but NUL (which no shell script can hold)."""
    value = _bounded(_string(given, what), what, limit)
    if "\x00" in value:
        raise FormatError(f"{what} {shown(value)} contains a NUL byte", "remove it")
    return value


# -- names -------------------------------------------------------------------------------------

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
HOSTNAME_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)
# What useradd and groupadd accept by default (NAME_REGEX in login.defs, 32 characters):
# a safe subset of every Linux distribution's rules.
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}\$?$")
IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def name(given: Any, what: str = "the name", limit: int = 64) -> str:
    """An osbake name (image, variant, element, partition, repository)."""
    value = _string(given, what)
    if not NAME.fullmatch(value):
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            "use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
        )
    return _bounded(value, what, limit)


LVM_NAME = re.compile(r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$")
# lvm(8), VALID NAMES: what LVM keeps for itself.
LVM_RESERVED_LV = ("snapshot", "pvmove")
LVM_RESERVED_PARTS = (
    "_cdata", "_cmeta", "_corig", "_iorig", "_mimage", "_mlog", "_pmspare",
    "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig",
)  # fmt: skip
# A volume group appears as /dev/<name>: it may not be a folder /dev already has.
LVM_DEV_NAMES = (
    "block", "bsg", "bus", "char", "cpu", "disk", "dri", "fd", "hugepages", "input",
    "mapper", "mqueue", "net", "pts", "shm", "snd", "vfio",
)  # fmt: skip


def lvm_name(given: Any, what: str, volume: bool) -> str:
    """A volume group (volume=False) or logical volume name LVM accepts (lvm(8))."""
    value = _string(given, what)
    hint = "use letters, digits, '+', '_', '.' and '-', not starting with '-'"
    if not LVM_NAME.fullmatch(value) or value in (".", ".."):
        raise FormatError(f"{shown(value)} is not a valid {what}", hint)
    if volume and (value in LVM_RESERVED_LV or any(part in value for part in LVM_RESERVED_PARTS)):
        raise FormatError(
            f"{shown(value)} is not a valid {what}: LVM keeps it for its own volumes",
            "choose another name (not snapshot or pvmove, without _rimage, _tmeta, ...)",
        )
    if not volume and value in LVM_DEV_NAMES:
        raise FormatError(
            f"{shown(value)} is not a valid {what}: the system has /dev/{value} already",
            "choose another name, e.g. vg0",
        )
    return _bounded(value, what, 63)


def identifier(given: Any, what: str = "the value", limit: int = 128) -> str:
    """A word such as a datasource, a key type or a locale folder: no spaces, no paths."""
    value = _string(given, what)
    if not IDENTIFIER.fullmatch(value):
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            "use letters, digits, '.', '_', '+' and '-', starting with a letter or digit",
        )
    return _bounded(value, what, limit)


def hostname(given: Any, what: str = "host name") -> str:
    """A host name (RFC 1123): dot-separated labels of letters, digits and '-'."""
    value = _string(given, what)
    labels = value.split(".")
    if (
        not value
        or len(value) > 253
        or not all(HOSTNAME_LABEL.fullmatch(label) for label in labels)
        or value.isdigit()
    ):
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            "use letters, digits and '-' (not at the start or end of a part), at most 63 "
            "characters per dot-separated part and 253 in all (RFC 1123)",
        )
    return value


def user_name(given: Any, what: str = "user name") -> str:
    """A user name useradd accepts everywhere: [a-z_][a-z0-9_-]*, at most 32 characters."""
    value = _string(given, what)
    if not USER_NAME.fullmatch(value):
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            "start with a lower-case letter or '_', then lower-case letters, digits, "
            "'_' or '-', 32 characters at most",
        )
    return value


def group_name(value: Any, what: str = "group name") -> str:
    """A group name groupadd accepts: the same rules as a user name."""
    return user_name(value, what)


MAX_ID = 4294967294  # (uid_t)-1 means "no id"


def numeric_id(value: Any, what: str = "id") -> int:
    """A numeric user or group id (a number or a string of digits)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise FormatError(
            f"{what} must be a number, not {type_name(value)}", "write a whole number"
        )
    if isinstance(value, str) and (not value.isascii() or not value.isdigit() or len(value) > 10):
        raise FormatError(f"{shown(value)} is not a valid {what}", "write a whole number")
    number = int(value)
    if not 0 <= number <= MAX_ID:
        raise FormatError(f"{what} {number} is out of range", f"use a number from 0 to {MAX_ID}")
    return number


def owner(given: Any, what: str = "owner") -> str:
    """A user (or group) inside the image: a name, or a numeric id as a quoted string."""
    value = _string(given, what)
    if value.isascii() and value.isdigit():
        numeric_id(value, what)
        return value
    return user_name(value, what)


def env_name(given: Any, what: str = "variable name") -> str:
    value = _string(given, what)
    if not ENV_NAME.fullmatch(value) or len(value) > 128:
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            "use letters, digits and '_', not starting with a digit",
        )
    return value


# -- Debian ------------------------------------------------------------------------------------

# Debian policy 5.6.1: lower case letters, digits, '+', '-', '.'; at least two
# characters; starting with a letter or digit.
PACKAGE_NAME = r"[a-z0-9][a-z0-9+.-]+"
# Debian policy 5.6.12: [epoch:]upstream[-revision].
VERSION = r"[0-9][A-Za-z0-9.+~:-]*"
PACKAGE = re.compile(rf"^{PACKAGE_NAME}$")
PACKAGE_SPEC = re.compile(
    rf"^(?P<name>{PACKAGE_NAME})(:(?P<arch>[a-z0-9][a-z0-9-]*))?"
    rf"(=(?P<version>{VERSION})|/(?P<release>[a-z0-9][a-z0-9.+-]*))?$"
)
CODENAME = re.compile(r"^[a-z0-9][a-z0-9.+_-]*$")
COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+/-]*$")
SUITE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._+~/-]*|\.?/)$")


def package(given: Any, what: str = "package name") -> str:
    """A Debian package name (policy 5.6.1), without version or release."""
    value = _string(given, what)
    if not PACKAGE.fullmatch(value) or len(value) > 128:
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            "Debian package names are lower-case letters, digits, '+', '-' and '.', "
            "at least two characters, starting with a letter or digit",
        )
    return value


def package_spec(given: Any, what: str = "package") -> str:
    """A package as apt-get install takes it: name[:arch][=version | /release]."""
    value = _string(given, what)
    if not PACKAGE_SPEC.fullmatch(value) or len(value) > 256:
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            "write a Debian package name (lower-case letters, digits, '+', '-', '.'; at "
            "least two characters), optionally with :arch, =version or /release",
        )
    return value


def codename(given: Any, what: str = "release") -> str:
    value = _string(given, what)
    if not CODENAME.fullmatch(value) or len(value) > 64:
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            "write a release codename such as bookworm (lower-case letters, digits, "
            "'.', '+', '_', '-')",
        )
    return value


def component(given: Any, what: str = "component") -> str:
    value = _string(given, what)
    if not COMPONENT.fullmatch(value) or len(value) > 64:
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            "write an archive component such as main or non-free-firmware",
        )
    return value


def suite(given: Any, what: str = "suite") -> str:
    value = _string(given, what)
    if not SUITE.fullmatch(value) or len(value) > 128:
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            "write a suite such as bookworm-backports (letters, digits, '.', '_', '+', "
            "'~', '-', '/'), or ./ for a flat repository",
        )
    return value


# -- URLs --------------------------------------------------------------------------------------

URL_SCHEMES = ("http", "https", "ftp", "file", "copy")
# RFC 3986 characters, less '#' (a fragment means nothing to apt, and starts a
# comment in some of its files), quotes and backslash are not in the set.
URL = re.compile(
    r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<rest>[A-Za-z0-9\-._~:/?\[\]@!$&()*+,;=%]*)$"
)


def url(given: Any, what: str = "URL", schemes: tuple[str, ...] | None = URL_SCHEMES) -> str:
    """A URL with a scheme and (except for file: and copy:) a host; no spaces or quotes.

    `schemes` lists the schemes allowed; None allows any.
    """
    value = _bounded(_string(given, what), what, 2048)
    match = URL.fullmatch(value)
    allowed = ", ".join(f"{s}://" for s in schemes or ("http", "https"))
    if match is None:
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            f"write a URL such as http://deb.example/debian ({allowed}), without spaces, "
            "quotes or control characters (percent-encode them)",
        )
    scheme, rest = match.group("scheme"), match.group("rest")
    if schemes is not None and scheme not in schemes:
        raise FormatError(
            f"the {what} {shown(value)} has the scheme {scheme}://, which osbake does not use",
            f"use one of {allowed}",
        )
    if scheme in ("file", "copy"):
        if not rest.startswith("/"):
            raise FormatError(
                f"the {what} {shown(value)} does not name an absolute path",
                f"write {scheme}:///path/to/folder",
            )
    elif not rest or rest.startswith(("/", "?", "@")):
        raise FormatError(f"the {what} {shown(value)} has no host", f"write {scheme}://host/path")
    return value


# -- paths -------------------------------------------------------------------------------------


def image_path(given: Any, what: str = "path", limit: int = 4096) -> str:
    """An absolute path inside the image: normalised, no '..', no control characters."""
    value = line(given, what, limit)
    if not value.startswith("/"):
        raise FormatError(
            f"{what} {shown(value)} is not an absolute path", "write it from /, e.g. /etc/motd"
        )
    normal = posixpath.normpath(value)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    parts = value.rstrip("/").split("/")[1:]
    if ".." in parts or "." in parts or "//" in value.rstrip("/"):
        raise FormatError(
            f"{what} {shown(value)} is not a normalised path",
            f"write it without '.', '..' or '//', e.g. {normal}",
        )
    return value


def mount_point(given: Any, what: str = "mount point") -> str:
    """An absolute path that fits an fstab field: no white space either."""
    value = image_path(given, what, 1024)
    if " " in value:
        raise FormatError(f"{what} {shown(value)} contains a space", "use a path without spaces")
    return value


RECIPE_FOLDER_HINT = (
    "files must be inside the recipe's folder: copy the file there and name it "
    "relative to the recipe, e.g. files/motd"
)


def relative_path(
    given: Any,
    what: str = "path",
    limit: int = 4096,
    *,
    inside: str = "the recipe's folder",
    hint: str = RECIPE_FOLDER_HINT,
) -> str:
    """A path relative to a folder, that cannot leave it: no '/' at the start, no '..'."""
    value = line(given, what, limit)
    if not value or value.startswith("/"):
        raise FormatError(f"{what} {shown(value)} must be a path relative to {inside}", hint)
    if ".." in value.split("/"):
        raise FormatError(f"{what} {shown(value)} leaves {inside} ('..')", hint)
    return value


def module_path(given: Any, what: str = "module path") -> str:
    """A path under /lib/modules/<version>/kernel/: relative, no '..', no glob characters."""
    value = relative_path(
        given,
        what,
        1024,
        inside="/lib/modules/<version>/kernel/",
        hint="write a path such as drivers/gpu/drm/amd",
    )
    if not re.fullmatch(r"[A-Za-z0-9._+/-]+", value):
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            "write a path such as drivers/gpu/drm/amd (letters, digits, '.', '_', '+', '-', '/')",
        )
    return value


def file_mode(value: Any, what: str = "mode") -> str:
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3,4}", value):
        raise FormatError(
            f'{what} must be an octal mode in quotes, e.g. mode: "0644"'
            + (" (unquoted, YAML reads 0644 as a number)" if isinstance(value, int) else ""),
            'write the mode as a quoted octal string, e.g. "0644" or "0755"',
        )
    return value


# -- system settings ---------------------------------------------------------------------------

TZ_PART = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9_.+-]*$")
LOCALE = re.compile(
    r"^(C|POSIX|C\.UTF-8|C\.utf8|[a-z]{2,3}(_[A-Z]{2}|_[0-9]{3})?(\.[A-Za-z0-9-]+)?(@[A-Za-z0-9]+)?)$"
)


def timezone(given: Any, what: str = "time zone") -> str:
    value = _string(given, what)
    parts = value.split("/")
    if (
        not value
        or len(value) > 128
        or not all(TZ_PART.fullmatch(p) and p not in (".", "..") for p in parts)
    ):
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            "write a name from the tz database, such as Etc/UTC or Europe/Berlin",
        )
    return value


def locale(given: Any, what: str = "locale") -> str:
    value = _string(given, what)
    if not LOCALE.fullmatch(value) or len(value) > 64:
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            "write a locale such as en_US.UTF-8, de_DE.UTF-8@euro or C.UTF-8",
        )
    return value


# The kernel's own limit (COMMAND_LINE_SIZE on x86 and most arches).
MAX_CMDLINE = 2048
# Characters GRUB's script language reads (quotes, '$', ';', braces, ...) are not
# kernel-parameter characters anyway.
CMDLINE_WORD = re.compile(r"^[A-Za-z0-9._,:=/+@%~!*^?\[\]-]+$")


def cmdline(given: Any, what: str = "kernel command line") -> str:
    value = _string(given, what)
    if len(value) > MAX_CMDLINE:
        raise FormatError(
            f"the {what} is {len(value)} characters long; the kernel takes at most {MAX_CMDLINE}",
            "shorten it",
        )
    for word in value.split(" "):
        if word and not CMDLINE_WORD.fullmatch(word):
            raise FormatError(
                f"{shown(word)} is not a valid word of the {what}",
                "write words separated by single spaces, of letters, digits and "
                "._,:=/+@%~!*^?[]- (no quotes, '$', ';', braces, tabs or newlines)",
            )
    return value


def crypt_hash(given: Any, what: str = "password hash") -> str:
    """A crypt(3) hash as /etc/shadow holds it (or '!' / '*' for none)."""
    value = _string(given, what)
    if not re.fullmatch(r"[!*]{0,2}[A-Za-z0-9./$=+-]*", value) or len(value) > 512:
        raise FormatError(
            f"{what} is not a crypt(3) hash",
            'give a hash from mkpasswd -m sha-512 (or "!" for no password); never a '
            "clear-text password",
        )
    return value


SSH_KEY_TYPES = frozenset(
    {
        "ssh-rsa",
        "ssh-dss",
        "ssh-ed25519",
        "ssh-ed448",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
SSH_CERT_SUFFIX = "-cert-v01@openssh.com"


def ssh_public_key(given: Any, what: str = "ssh key") -> str:
    """One ssh public key line (authorized_keys syntax), checked down to its data."""
    text = _string(given, what).strip()
    if "PRIVATE KEY" in text:
        raise FormatError(
            f"{what} is a PRIVATE ssh key",
            "give the public key: the file ending in .pub (never hand out a private key)",
        )
    text = line(text, what, 16384)
    words = text.split()
    position = next(
        (i for i, w in enumerate(words) if w in SSH_KEY_TYPES or w.endswith(SSH_CERT_SUFFIX)),
        None,
    )
    if position is None or position + 1 >= len(words):
        raise FormatError(
            f"{what} is not an ssh public key: {shown(text, 50)}",
            "a public key line looks like 'ssh-ed25519 AAAAC3... comment' "
            "(make one with ssh-keygen -t ed25519)",
        )
    key_type, blob = words[position], words[position + 1]
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(
            f"{what}: the {key_type} key is not valid base64 (was it cut or wrapped?)",
            "copy the whole key as one line",
        ) from None
    if len(raw) < 4 or raw[4 : 4 + int.from_bytes(raw[:4], "big")] != key_type.encode():
        raise FormatError(
            f"{what}: the key's data does not match its type {key_type}",
            "the line may have been edited or cut; copy it again from the .pub file",
        )
    if not key_type.endswith(SSH_CERT_SUFFIX) and not _whole_fields(raw):
        raise FormatError(
            f"{what}: the {key_type} key is incomplete (cut short or padded)",
            "copy the whole key as one line from the .pub file",
        )
    return text


def _whole_fields(raw: bytes) -> bool:
    """A public key blob is length-prefixed fields that use up every byte."""
    position = 0
    while position < len(raw):
        if position + 4 > len(raw):
            return False
        position += 4 + int.from_bytes(raw[position : position + 4], "big")
    return position == len(raw)


def login_shell(given: Any, what: str = "login shell") -> str:
    value = image_path(given, what, 256)
    if not re.fullmatch(r"[A-Za-z0-9._/+-]+", value):
        raise FormatError(f"{shown(value)} is not a valid {what}", "e.g. /bin/bash")
    return value


# -- sizes -------------------------------------------------------------------------------------

UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ti": 1024**4,
    "tib": 1024**4,
}
# On the command line (`deploy --size`, `serve --disk-budget`) a bare K/M/G/T is a power of
# 1024, as qemu-img and truncate read it; everything else is read as in a recipe.
UNITS_FOR_FLAGS = UNITS | {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4


def parse_size(text: str, *, flag: bool = False) -> int:
    """'127MiB' -> 133169152 (with flag=True, '8G' is 8 GiB). ValueError for anything else."""
    units = UNITS_FOR_FLAGS if flag else UNITS
    match = re.fullmatch(r"\s*(\d{1,20}(?:\.\d{1,12})?)\s*([a-zA-Z]{0,3})\s*", text)
    if not match or match.group(2).lower() not in units:
        raise ValueError(f"'{text}' is not a size (use e.g. 512MiB, 2GiB)")
    return int(Decimal(match.group(1)) * units[match.group(2).lower()])


def format_size(value: int) -> str:
    """Bytes for people: 1.5 GiB, 127 MiB, 4096 B."""
    for unit, factor in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(value) >= factor:
            amount = value / factor
            return f"{amount:.0f} {unit}" if amount == int(amount) else f"{amount:.1f} {unit}"
    return f"{value} B"


SIZE = re.compile(r"^\s*(\d{1,20}(?:\.\d{1,12})?)\s*([a-zA-Z]{0,3})\s*$")
# Larger than any disk image osbake should make (VMDK's own limit is 62 TiB).
MAX_DISK_SIZE = 64 * 1024**4


def size_bytes(
    value: Any,
    what: str = "size",
    *,
    minimum: int = 1,
    maximum: int = MAX_DISK_SIZE,
) -> int:
    """A size such as 512MiB or 2GiB, in bytes, within [minimum, maximum]."""
    value = _string(value, what)
    match = SIZE.fullmatch(value)
    if match is None or match.group(2).lower() not in UNITS:
        raise FormatError(
            f"{shown(value)} is not a valid {what}",
            "write a number and a unit, e.g. 512MiB, 2GiB or 1.5GiB (KiB/MiB/GiB/TiB are "
            "powers of 1024, K/M/G/T of 1000)",
        )
    try:
        amount = Decimal(match.group(1)) * UNITS[match.group(2).lower()]
    except InvalidOperation:  # pragma: no cover - the pattern keeps numbers small
        raise FormatError(f"{shown(value)} is not a valid {what}", "e.g. 512MiB") from None
    if amount > maximum:
        raise FormatError(
            f"the {what} {value} is larger than osbake's limit of {format_size(maximum)}",
            f"use a size of at most {format_size(maximum)}",
        )
    result = int(amount)
    if result < minimum:
        if minimum <= 1:
            raise FormatError(f"the {what} {value} is zero", "give a size larger than 0")
        raise FormatError(
            f"the {what} {value} is smaller than {format_size(minimum)}",
            f"use at least {format_size(minimum)}",
        )
    return result


def percent(given: Any, what: str = "size") -> float:
    value = _string(given, what)
    match = re.fullmatch(r"(\d{1,3}(?:\.\d{1,6})?)%", value)
    if match is None or not 0 < float(match.group(1)) <= 100:
        raise FormatError(
            f"{shown(value)} is not a valid percentage for the {what}",
            "write a percentage above 0 and at most 100, e.g. 25%",
        )
    return float(match.group(1))


# -- formats by name (element options declare them) -------------------------------------------


class Format(StrEnum):
    """Formats an element option (or a record field) may declare in element.yaml."""

    LINE = "line"
    TEXT = "text"
    NAME = "name"
    IDENTIFIER = "identifier"
    HOSTNAME = "hostname"
    USER = "user"
    GROUP = "group"
    URL = "url"
    PATH = "path"
    RELATIVE_PATH = "relative-path"
    MODULE_PATH = "module-path"
    PACKAGE = "package"
    TIMEZONE = "timezone"
    LOCALE = "locale"
    SSH_KEY = "ssh-key"
    CRYPT = "crypt"
    SHELL = "shell"
    CMDLINE = "cmdline"
    UID = "uid"


CHECKS: dict[Format, Callable[..., Any]] = {
    Format.LINE: line,
    Format.TEXT: text,
    Format.NAME: name,
    Format.IDENTIFIER: identifier,
    Format.HOSTNAME: hostname,
    Format.USER: user_name,
    Format.GROUP: group_name,
    Format.URL: lambda value, what="URL": url(value, what, schemes=None),
    Format.PATH: image_path,
    Format.RELATIVE_PATH: lambda value, what="path": relative_path(
        value, what, inside="its folder", hint="write a relative path without '..'"
    ),
    Format.MODULE_PATH: module_path,
    Format.PACKAGE: package,
    Format.TIMEZONE: timezone,
    Format.LOCALE: locale,
    Format.SSH_KEY: ssh_public_key,
    Format.CRYPT: crypt_hash,
    Format.SHELL: login_shell,
    Format.CMDLINE: cmdline,
    Format.UID: lambda value, what="user id": numeric_id(value, what),
}


def check(fmt: Format, value: Any, context: str | None = None) -> Any:
    """Check `value` against the named format; `context` starts the message (what it is)."""
    try:
        return CHECKS[fmt](value)
    except FormatError as exc:
        if context is None:
            raise
        raise FormatError(f"{context}: {exc.message}", exc.hint) from None
