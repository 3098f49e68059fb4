"""The value formats (osbake.formats): what each accepts and refuses, with a hint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from osbake import formats
from osbake.formats import FormatError

GOOD: list[tuple[Callable[..., Any], Any]] = [
    (formats.hostname, "web1"),
    (formats.hostname, "web-1.example.org"),
    (formats.hostname, "A1"),
    (formats.hostname, "x" * 63),
    (formats.user_name, "ops"),
    (formats.user_name, "_svc"),
    (formats.user_name, "deploy-bot"),
    (formats.user_name, "machine$"),
    (formats.group_name, "adm"),
    (formats.owner, "root"),
    (formats.owner, "33"),
    (formats.package, "curl"),
    (formats.package, "g++"),
    (formats.package, "libc6.1-dev"),
    (formats.package_spec, "curl=7.88.1-10+deb12u5"),
    (formats.package_spec, "linux-image-amd64/bookworm-backports"),
    (formats.package_spec, "libc6:i386"),
    (formats.package_spec, "systemd=1:252.22-1~deb12u1"),
    (formats.url, "http://deb.example/debian"),
    (formats.url, "https://user:pw@deb.example:8443/debian/"),
    (formats.url, "http://[2001:db8::1]/debian"),
    (formats.url, "file:///srv/mirror"),
    (formats.codename, "bookworm"),
    (formats.codename, "bookworm-backports"),
    (formats.component, "non-free-firmware"),
    (formats.component, "main/debian-installer"),
    (formats.suite, "bookworm-backports"),
    (formats.suite, "./"),
    (formats.image_path, "/etc/motd"),
    (formats.image_path, "/srv/www/"),
    (formats.mount_point, "/boot/efi"),
    (formats.relative_path, "files/motd"),
    (formats.relative_path, "./files/motd"),
    (formats.module_path, "drivers/gpu/drm/amd"),
    (formats.file_mode, "0644"),
    (formats.file_mode, "755"),
    (formats.file_mode, "4755"),
    (formats.timezone, "Etc/UTC"),
    (formats.timezone, "America/Argentina/Buenos_Aires"),
    (formats.timezone, "Etc/GMT+5"),
    (formats.locale, "en_US.UTF-8"),
    (formats.locale, "C.UTF-8"),
    (formats.locale, "sr@latin"),
    (formats.locale, "pt_BR"),
    (formats.cmdline, "console=tty0 console=ttyS0,115200n8 quiet"),
    (formats.cmdline, "acpi_osi=!Linux module_blacklist=a,b systemd.unit=rescue.target"),
    (formats.crypt_hash, "$6$rounds=5000$salt$hash./AB"),
    (formats.crypt_hash, "!"),
    (formats.crypt_hash, "$y$j9T$abc$def"),
    (formats.login_shell, "/bin/bash"),
    (formats.identifier, "NoCloud"),
    (formats.name, "debian-cloud"),
    (formats.text, "two\nlines\tand a tab"),
    (formats.script_line, 'echo "a;b" | tee /x\nif true; then :; fi'),
    (formats.env_name, "MY_VAR"),
]

BAD: list[tuple[Callable[..., Any], Any, str]] = [
    (formats.hostname, "web\nx", "not a valid host name"),
    (formats.hostname, "-web", "not a valid host name"),
    (formats.hostname, "web_1", "not a valid host name"),
    (formats.hostname, "a..b", "not a valid host name"),
    (formats.hostname, "x" * 64, "not a valid host name"),
    (formats.hostname, "", "not a valid host name"),
    (formats.hostname, "1234", "not a valid host name"),
    (formats.hostname, ["web"], "must be a string"),
    (formats.user_name, "bob;id", "not a valid user name"),
    (formats.user_name, "Ops", "not a valid user name"),
    (formats.user_name, "1ops", "not a valid user name"),
    (formats.user_name, "-r", "not a valid user name"),
    (formats.user_name, "x" * 33, "not a valid user name"),
    (formats.user_name, "a:b", "not a valid user name"),
    (formats.owner, "-R", "not a valid owner"),
    (formats.owner, "99999999999", "not a valid owner"),
    (formats.package, "a", "not a valid package"),
    (formats.package, "Curl", "not a valid package"),
    (formats.package, "curl;id", "not a valid package"),
    (formats.package, "*", "not a valid package"),
    (formats.package_spec, "--force-yes", "not a valid package"),
    (formats.package_spec, "curl=", "not a valid package"),
    (formats.package_spec, "curl stuff", "not a valid package"),
    (formats.url, "deb.example/debian", "not a valid URL"),
    (formats.url, "http://deb.example/a b", "not a valid URL"),
    (formats.url, 'http://deb.example/"', "not a valid URL"),
    (formats.url, "http://deb.example/#x", "not a valid URL"),
    (formats.url, "http://deb.example/\n", "not a valid URL"),
    (formats.url, "gopher://deb.example/", "scheme gopher://"),
    (formats.url, "http:///debian", "has no host"),
    (formats.url, "file://relative", "absolute path"),
    (formats.codename, "../x", "not a valid release"),
    (formats.codename, "Bookworm", "not a valid release"),
    (formats.component, "main contrib", "not a valid component"),
    (formats.suite, "a b", "not a valid suite"),
    (formats.image_path, "etc/motd", "not an absolute path"),
    (formats.image_path, "/etc/../root", "not a normalised path"),
    (formats.image_path, "/etc//motd", "not a normalised path"),
    (formats.image_path, "/etc/./motd", "not a normalised path"),
    (formats.image_path, "/etc/motd\t0777", "control character"),
    (formats.image_path, "/etc/\x00", "control character"),
    (formats.mount_point, "/srv/my data", "contains a space"),
    (formats.relative_path, "/etc/hostname", "relative to the recipe's folder"),
    (formats.relative_path, "../x", "leaves the recipe's folder"),
    (formats.relative_path, "a/../../x", "leaves the recipe's folder"),
    (formats.relative_path, "", "relative to the recipe's folder"),
    (formats.module_path, "drivers/*", "not a valid module path"),
    (formats.module_path, "../../etc", "leaves /lib/modules"),
    (formats.file_mode, "999", "octal mode"),
    (formats.file_mode, 420, "YAML reads 0644 as a number"),
    (formats.timezone, "../../etc/shadow", "not a valid time zone"),
    (formats.timezone, "Europe/Berlin\n", "not a valid time zone"),
    (formats.locale, "en_US.UTF-8\nLC_ALL=x", "not a valid locale"),
    (formats.locale, "*", "not a valid locale"),
    (formats.cmdline, "quiet\ninit=/bin/sh", "not a valid word"),
    (formats.cmdline, "quiet; insmod x", "not a valid word"),
    (formats.cmdline, "root=$x", "not a valid word"),
    (formats.cmdline, 'a="b c"', "not a valid word"),
    (formats.cmdline, "a" * 2049, "at most 2048"),
    (formats.crypt_hash, "x:0:0", "crypt(3)"),
    (formats.crypt_hash, "hash\nroot::0:0", "crypt(3)"),
    (formats.login_shell, "bash", "not an absolute path"),
    (formats.identifier, "x ]", "not a valid"),
    (formats.name, "UP", "not a valid"),
    (formats.name, "x" * 65, "the limit is 64"),
    (formats.line, "a\x1b[2Jb", "control character"),
    (formats.text, "bell\x07", "control character"),
    (formats.script_line, "a\x00b", "NUL byte"),
    (formats.env_name, "A=B", "not a valid variable name"),
    (formats.ssh_public_key, "ssh-ed25519 AAA", "not valid base64"),
    (formats.ssh_public_key, "ssh-ed25519 AAAA", "does not match its type"),
    (formats.ssh_public_key, "hello world", "not an ssh public key"),
    (formats.ssh_public_key, "-----BEGIN OPENSSH PRIVATE KEY-----", "PRIVATE"),
]


@pytest.mark.parametrize(("check", "value"), GOOD, ids=[f"{c.__name__}:{v}" for c, v in GOOD])
def test_good_values_pass(check: Callable[..., Any], value: Any) -> None:
    check(value)


@pytest.mark.parametrize(
    ("check", "value", "message"), BAD, ids=[f"{c.__name__}:{v!r}"[:60] for c, v, _ in BAD]
)
def test_bad_values_are_refused_with_a_hint(
    check: Callable[..., Any], value: Any, message: str
) -> None:
    with pytest.raises(FormatError) as caught:
        check(value)
    assert message in caught.value.message
    assert caught.value.hint


def test_values_are_shown_escaped_and_cut() -> None:
    assert formats.shown("a\nb") == "'a\\nb'"
    assert formats.shown("\u202e") == "'\\u202e'"
    assert formats.shown("x" * 100).endswith("…")
    assert len(formats.shown("x" * 100)) < 70


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512MiB", 512 * 1024**2), ("2GiB", 2 * 1024**3), ("1.5GiB", 3 * 1024**3 // 2), ("1G", 10**9)],
)
def test_sizes(text: str, expected: int) -> None:
    assert formats.size_bytes(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "is zero"),
        ("0MiB", "is zero"),
        ("0.0000001MiB", "is zero"),
        ("65TiB", "limit of 64 TiB"),
        ("99999999TiB", "limit of 64 TiB"),
        ("1" * 400 + "MiB", "not a valid size"),
        ("12 parsecs", "not a valid size"),
        ("-1GiB", "not a valid size"),
    ],
)
def test_bad_sizes_name_the_limit(text: str, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        formats.size_bytes(text)
    assert message in caught.value.message


def test_a_size_may_be_zero_where_allowed() -> None:
    assert formats.size_bytes("0", minimum=0) == 0


@pytest.mark.parametrize("value", ["0%", "101%", "-5%", "50"])
def test_bad_percentages(value: str) -> None:
    with pytest.raises(FormatError, match="percentage"):
        formats.percent(value)


def test_named_formats_prefix_their_context() -> None:
    with pytest.raises(FormatError) as caught:
        formats.check(formats.Format.HOSTNAME, "a b", "option 'hostname' of element 'base'")
    assert caught.value.message.startswith("option 'hostname' of element 'base': ")


def test_every_named_format_has_a_check() -> None:
    assert set(formats.CHECKS) == set(formats.Format)


@pytest.mark.parametrize(
    "check",
    [
        formats.hostname,
        formats.user_name,
        formats.package,
        formats.package_spec,
        formats.codename,
        formats.component,
        formats.suite,
        formats.url,
        formats.locale,
        formats.timezone,
        formats.name,
        formats.identifier,
        formats.env_name,
    ],
)
def test_a_trailing_newline_is_refused(check: Callable[..., Any]) -> None:
    """'$' in a Python pattern matches before a final newline; the checks must not."""
    good = {
        formats.url: "http://deb.example/debian",
        formats.locale: "C.UTF-8",
        formats.timezone: "Etc/UTC",
        formats.env_name: "X",
    }.get(check, "bookworm")
    check(good)
    with pytest.raises(FormatError):
        check(good + "\n")


def test_one_table_of_units_for_every_size_in_osbake() -> None:
    """Recipes, the disk code, deploy --size and serve --disk-budget read sizes with one grammar."""
    from osbake.deploy.commands import parse_size as deploy_size
    from osbake.disk import sizes
    from osbake.service.config import parse_size as budget_size

    assert sizes.parse_size is formats.parse_size
    assert sizes.UNITS is formats.UNITS
    assert formats.parse_size("2G") == 2 * 10**9  # in a recipe a bare G is SI
    assert deploy_size("2G") == budget_size("2G") == 2 * formats.GiB  # a flag reads it as qemu-img
    for text in ("2GiB", "2GB", "1.5MiB", "512"):
        assert deploy_size(text) == budget_size(text) == formats.parse_size(text)
