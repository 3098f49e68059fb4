from pathlib import Path

from osbake.distros.apt_sources import parse_deb822, parse_one_line, read_host_sources

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.invalid/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.invalid/debian-security
Suites: bookworm-security
Components: main
Enabled: yes

Types: deb
URIs: http://disabled.invalid/x
Suites: bookworm
Components: main
Enabled: no
"""


def test_deb822() -> None:
    entries = parse_deb822(DEB822)
    assert len(entries) == 2
    assert entries[0].uri == "http://mirror.invalid/debian"
    assert entries[0].suites == ("bookworm", "bookworm-updates")
    assert entries[0].components == ("main", "contrib")
    assert entries[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"


def test_one_line_with_options() -> None:
    entries = parse_one_line(
        "deb [arch=amd64 signed-by=/k.gpg] http://m.invalid/debian bookworm main # x\n"
        "deb-src http://m.invalid/debian bookworm main\n# deb http://x y z\n"
    )
    assert [e.types for e in entries] == [("deb",), ("deb-src",)]
    assert entries[0].signed_by == "/k.gpg"
    assert entries[0].suites == ("bookworm",)


def test_host_archive_and_security(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    host = read_host_sources(tmp_path)
    archive, security = host.archive(), host.security()
    assert archive is not None and archive.uri == "http://mirror.invalid/debian"
    assert security is not None and security.uri == "http://security.invalid/debian-security"
