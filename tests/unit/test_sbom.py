"""The SPDX 2.3 SBOM: valid by the SPDX tools' own validator, read from a tree safely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from osbake import sbom
from osbake.manifest import Manifest

STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u8
Depends: libgcc-s1

Package: libgcc-s1
Status: install ok installed
Architecture: amd64
Version: 12.2.0-14
Pre-Depends: libc6 (>= 2.35)

Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b2
Pre-Depends: libc6 (>= 2.36), libtinfo6 (>= 6)
Depends: base-files (>= 2.1.12), debianutils (>= 5.6-0.1)

Package: mawk
Status: install ok installed
Architecture: amd64
Version: 1.3.4.20200120-3.1
Provides: awk
Pre-Depends: libc6 (>= 2.34)

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: libstdc++6
Status: install ok installed
Architecture: amd64
Version: 12.2.0-14
Depends: gawk | awk, libc6
"""

PACKAGES = [
    ("libc6", "2.36-9+deb12u8", "amd64", "glibc"),
    ("libgcc-s1", "12.2.0-14", "amd64", "gcc-12"),
    ("bash", "5.2.15-2+b2", "amd64", "bash"),
    ("mawk", "1.3.4.20200120-3.1", "amd64", "mawk"),
    ("libstdc++6", "12.2.0-14", "amd64", "gcc-12"),
]


def make_tree(root: Path, host_secret: Path) -> Path:
    tree = root / "tree"
    (tree / "var/lib/dpkg").mkdir(parents=True)
    (tree / "var/lib/dpkg/status").write_text(STATUS)
    doc = tree / "usr/share/doc"
    for name in ("libc6", "bash", "mawk"):
        (doc / name).mkdir(parents=True)
    (doc / "libc6/copyright").write_text(
        "Files: *\nLicense: LGPL-2.1+\n\nFiles: x\nLicense: GPL-2+ with OpenSSL exception\n"
    )
    (doc / "bash/copyright").write_text("Files: *\nLicense: GPL-3+\n")
    (doc / "mawk/copyright").write_text("License: GPL-2\nLicense: permissive-mawk\n")
    # Debian links a doc folder to another package's (relative and absolute links).
    (doc / "libgcc-s1").symlink_to("libc6")
    (doc / "libstdc++6").symlink_to("/usr/share/doc/bash")
    # A hostile tree: a copyright that points out of the tree is read inside it.
    (doc / "evil").symlink_to(str(host_secret))
    return tree


def manifest() -> Manifest:
    return Manifest.model_validate(
        {
            "osbake_version": "0.1.0",
            "image": "demo",
            "name": "demo",
            "arch": "amd64",
            "distro": "debian",
            "release": "bookworm",
            "recipe": {},
            "recipe_sha256": "0" * 64,
            "packages": [
                {"name": n, "version": v, "arch": a, "source": s, "source_version": v}
                for n, v, a, s in PACKAGES
            ],
        }
    )


def validate(doc: dict[str, object]) -> list[str]:
    parsed = JsonLikeDictParser().parse(json.loads(json.dumps(doc)))
    return [m.validation_message for m in validate_full_spdx_document(parsed)]


def test_the_document_validates_and_lists_every_package(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.mkdir()
    (secret / "copyright").write_text("License: HOST-SECRET\n")
    tree = make_tree(tmp_path, secret)
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / sbom.deb_name("bash", "5.2.15-2+b2", "amd64")).write_bytes(b"a deb")
    debs = {p.name: p for p in pool.iterdir()}
    items = sbom.read_debian_tree(tree, manifest(), debs)
    doc = sbom.document(manifest(), items, created="2026-12-01T00:00:00Z")
    assert validate(doc) == []
    packages = {p["name"]: p for p in doc["packages"]}  # type: ignore[index]
    assert set(packages) == {"demo", *(p[0] for p in PACKAGES)}
    assert packages["libc6"]["licenseDeclared"] == "LGPL-2.1-or-later AND GPL-2.0-or-later"
    assert packages["libgcc-s1"]["licenseDeclared"] == packages["libc6"]["licenseDeclared"]
    assert packages["libstdc++6"]["licenseDeclared"] == "GPL-3.0-or-later"
    assert packages["mawk"]["licenseDeclared"] == "GPL-2.0-only AND LicenseRef-permissive-mawk"
    assert packages["bash"]["checksums"] == [
        {"algorithm": "SHA256", "checksumValue": sbom._sha256(pool / next(iter(debs)))}
    ]
    assert "checksums" not in packages["libc6"]
    purl = packages["libstdc++6"]["externalRefs"][0]["referenceLocator"]
    assert purl == "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64&distro=debian-bookworm"
    ids = {p["name"]: p["SPDXID"] for p in doc["packages"]}  # type: ignore[index]
    depends = {
        (r["spdxElementId"], r["relatedSpdxElement"])
        for r in doc["relationships"]  # type: ignore[union-attr]
        if r["relationshipType"] == "DEPENDS_ON"
    }
    assert (ids["bash"], ids["libc6"]) in depends
    assert (ids["libstdc++6"], ids["mawk"]) in depends  # awk, provided by mawk
    assert (ids["libgcc-s1"], ids["libc6"]) in depends
    contains = [r for r in doc["relationships"] if r["relationshipType"] == "CONTAINS"]  # type: ignore[union-attr]
    assert len(contains) == len(PACKAGES)


def test_a_link_out_of_the_tree_is_read_inside_it(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.mkdir()
    (secret / "copyright").write_text("License: HOST-SECRET\n")
    tree = make_tree(tmp_path, secret)
    assert sbom._licenses(tree, "evil") == []
    # The same path made inside the tree is what the image has, and is read.
    inside = tree / str(secret).lstrip("/")
    inside.mkdir(parents=True)
    (inside / "copyright").write_text("License: ISC\n")
    assert sbom._licenses(tree, "evil") == ["ISC"]
    (tree / "usr/share/doc/loop").symlink_to("loop")
    assert sbom._licenses(tree, "loop") == []
    assert sbom._licenses(tree, "../../../etc") == []


def test_the_same_input_gives_the_same_document(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.mkdir()
    tree = make_tree(tmp_path, secret)
    first = sbom.to_json(
        sbom.document(
            manifest(), sbom.read_debian_tree(tree, manifest()), created="2026-01-01T00:00:00Z"
        )
    )
    second = sbom.to_json(
        sbom.document(
            manifest(), sbom.read_debian_tree(tree, manifest()), created="2026-01-01T00:00:00Z"
        )
    )
    assert first == second


@pytest.mark.parametrize("size", [sbom.MAX_COPYRIGHT_BYTES + 1])
def test_an_oversized_copyright_file_is_not_read(tmp_path: Path, size: int) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/share/doc/big").mkdir(parents=True)
    with (tree / "usr/share/doc/big/copyright").open("wb") as handle:
        handle.write(b"License: MIT\n")
        handle.truncate(size)
    assert sbom._licenses(tree, "big") == []


def test_the_documents_time_is_the_mirrors_not_the_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from osbake.manifest import MirrorEntry

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    mirror = [
        MirrorEntry(source="a bookworm", sha256="0", date="Sat, 09 Nov 2024 10:01:24 UTC"),
        MirrorEntry(source="a bookworm-updates", sha256="0", date="Sun, 10 Nov 2024 08:00:00 UTC"),
        MirrorEntry(source="local", sha256="0", date="not a date"),
    ]
    assert sbom.created(mirror) == "2024-11-10T08:00:00Z"
    assert sbom.created([]) == "1970-01-01T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert sbom.created(mirror) == "2023-11-14T22:13:20Z"


def test_the_build_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    from osbake.manifest import build_epoch

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    dates = ["Sat, 09 Nov 2024 10:01:24 UTC", "Sun, 10 Nov 2024 08:00:00 UTC", "garbage", ""]
    assert build_epoch(dates) == 1731225600
    assert build_epoch([]) == 0
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert build_epoch(dates) == 1700000000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "not a number")
    assert build_epoch(dates) == 1731225600
