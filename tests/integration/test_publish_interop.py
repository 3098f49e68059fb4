"""Publishing signed simplestreams and reading them with the reference client
(python-simplestreams' sstream-query and sstream-mirror) and with `osbake sync`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.publish_helpers import GpgKey, RangeHandler, gpg_key, http_server, make_build

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
OLD, NEW = "20261120", "20261121"


@dataclass
class Published:
    repo: Path
    key: GpgKey
    builds: dict[str, Path]  # serial -> manifest
    url: str


def osbake(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osbake", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    """Two builds of one recipe on two days, published with --sign, served over HTTP."""
    root = tmp_path_factory.mktemp("published")
    with gpg_key(root) as key:
        yield from _publish_two_days(root, key)


def _publish_two_days(root: Path, key: GpgKey) -> Iterator[Published]:
    builds = {}
    for serial, day in ((OLD, "2026-11-20T09:00:00+00:00"), (NEW, "2026-11-21T09:00:00+00:00")):
        builds[serial] = make_build(
            root / f"out-{serial}",
            name="demo",
            finished=day,
            files={
                "demo.qcow2": ("qcow2", os.urandom(200_000) + serial.encode()),
                "demo.tar.zst": ("tar.zst", os.urandom(50_000)),
            },
        )
        result = osbake(
            "publish",
            str(builds[serial]),
            "--repo",
            str(root / "repo"),
            "--sign",
            key.fingerprint,
            "--label",
            "release",
            env=key.env,
        )
        assert result.returncode == 0, result.stderr
        assert f"published: org.osbake:demo:bookworm:amd64 {serial} (release)" in result.stdout
    with http_server(root / "repo") as url:
        yield Published(root / "repo", key, builds, url)


def _artifact(published: Published, serial: str, name: str) -> Path:
    return published.builds[serial].parent / name


def test_tree_layout_is_simplestreams(published: Published) -> None:
    index = json.loads((published.repo / "streams/v1/index.json").read_text())
    assert index["format"] == "index:1.0"
    entry = index["index"]["org.osbake:released:download"]
    assert entry["path"] == "streams/v1/org.osbake:released:download.json"
    signed_index = (published.repo / "streams/v1/index.sjson").read_text()
    assert signed_index.startswith("-----BEGIN PGP SIGNED MESSAGE-----")
    assert "streams/v1/org.osbake:released:download.sjson" in signed_index
    products = json.loads((published.repo / entry["path"]).read_text())
    assert products["format"] == "products:1.0"
    product = products["products"]["org.osbake:demo:bookworm:amd64"]
    assert {k: product[k] for k in ("os", "release", "arch", "version", "aliases", "recipe")} == {
        "os": "debian",
        "release": "bookworm",
        "arch": "amd64",
        "version": "12",
        "aliases": "12,bookworm",
        "recipe": "demo",
    }
    assert sorted(product["versions"]) == [OLD, NEW]
    version = product["versions"][NEW]
    assert version["label"] == "release"
    # the newer version has a changelog against the older one, as items beside it
    assert set(version["items"]) == {
        "disk1.img",
        "root.tar.zst",
        "manifest",
        "changelog",
        "changelog.json",
    }
    assert set(product["versions"][OLD]["items"]) == {"disk1.img", "root.tar.zst", "manifest"}
    changelog = (published.repo / version["items"]["changelog"]["path"]).read_text()
    assert changelog.startswith(f"--- org.osbake:demo:bookworm:amd64 {OLD}\n")
    disk = version["items"]["disk1.img"]
    data = (published.repo / disk["path"]).read_bytes()
    assert disk["size"] == len(data)
    assert disk["md5"] == hashlib.md5(data).hexdigest()
    assert disk["sha512"] == hashlib.sha512(data).hexdigest()
    folder = published.repo / disk["path"].rsplit("/", 1)[0]
    assert {"README", "index.html", "SHA256SUMS"} <= {p.name for p in folder.iterdir()}
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_sstream_query_lists_both_versions_with_sha256(published: Published) -> None:
    result = subprocess.run(
        [
            str(BIN / "sstream-query"),
            "--keyring",
            str(published.key.keyring),
            published.url + "streams/v1/index.sjson",
            "arch=amd64",
            "ftype=disk1.img",
            "--output-format",
            "%(version_name)s %(sha256)s %(label)s",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = sorted(result.stdout.split("\n"))[1:]
    assert lines == [
        f"{serial} {_sha256(_artifact(published, serial, 'demo.qcow2'))} release"
        for serial in (OLD, NEW)
    ]


def test_sstream_query_refuses_a_foreign_keyring(published: Published, tmp_path: Path) -> None:
    with gpg_key(tmp_path) as other:
        result = subprocess.run(
            [
                str(BIN / "sstream-query"),
                "--keyring",
                str(other.keyring),
                published.url + "streams/v1/index.sjson",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    assert result.returncode != 0
    assert "gpgv" in result.stderr  # the reference client fails in its signature check
    assert "returned non-zero exit status" in result.stderr


def test_sstream_mirror_mirrors_the_newest_and_its_checksums_verify(
    published: Published, tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror"
    result = subprocess.run(
        [
            str(BIN / "sstream-mirror"),
            "--keyring",
            str(published.key.keyring),
            "--max",
            "1",
            published.url + "streams/v1/index.sjson",
            str(mirror),
            "arch=amd64",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    disks = sorted(mirror.rglob("demo.qcow2"))
    assert [p.parent.name for p in disks] == [NEW]
    assert _sha256(disks[0]) == _sha256(_artifact(published, NEW, "demo.qcow2"))
    assert not list(mirror.rglob(f"{OLD}/*"))
    # the reference client mirrors the changelog items too, checksums verified
    assert sorted(p.name for p in mirror.rglob(f"{NEW}/changelog*")) == [
        "changelog.json",
        "changelog.txt",
    ]


def test_osbake_sync_mirrors_and_a_second_run_transfers_nothing(
    published: Published, tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror"
    keyring = str(published.key.keyring)
    first = osbake("sync", "--keyring", keyring, published.url, str(mirror), "--jobs", "3")
    assert first.returncode == 0, first.stderr
    assert "8 items selected, 8 transferred" in first.stdout  # with NEW's changelog
    second = osbake("sync", "--keyring", keyring, published.url, str(mirror))
    assert "8 items selected, 0 transferred" in second.stdout
    for serial in (OLD, NEW):
        for name in ("demo.qcow2", "demo.tar.zst"):
            copy = next(mirror.rglob(f"{serial}/{name}"))
            assert _sha256(copy) == _sha256(_artifact(published, serial, name))
    assert not list(mirror.rglob("*.partial"))
    changelog = next(mirror.rglob(f"{NEW}/changelog.txt"))
    assert changelog.read_bytes() == next(published.repo.rglob(f"{NEW}/changelog.txt")).read_bytes()
    # The mirror is a valid stream itself: the reference client reads it.
    query = subprocess.run(
        [
            str(BIN / "sstream-query"),
            "--no-verify",
            f"file://{mirror}/streams/v1/index.json",
            "ftype=disk1.img",
            "--output-format",
            "%(version_name)s",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert query.returncode == 0, query.stderr
    assert sorted(query.stdout.split()) == [OLD, NEW]


def test_osbake_sync_filters_and_max(published: Published, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    result = osbake(
        "sync", published.url, str(mirror), "ftype!=manifest", "path~qcow2$", "--max", "1"
    )
    assert result.returncode == 0, result.stderr
    files = sorted(p.relative_to(mirror).as_posix() for p in mirror.rglob("demo.*"))
    assert files == [f"demo/bookworm/amd64/{NEW}/demo.qcow2"]
    bad = osbake("sync", published.url, str(mirror), "arch")
    assert bad.returncode == 2
    assert "key=value, key!=value or key~regex" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_osbake_sync_resumes_a_partial_download(published: Published, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    source = _artifact(published, NEW, "demo.qcow2")
    dest = mirror / f"demo/bookworm/amd64/{NEW}/demo.qcow2"
    dest.parent.mkdir(parents=True)
    (dest.parent / ".demo.qcow2.partial").write_bytes(source.read_bytes()[:120_000])
    RangeHandler.requests.clear()
    result = osbake("sync", published.url, str(mirror), "ftype=disk1.img", "--max", "1")
    assert result.returncode == 0, result.stderr
    assert (f"/demo/bookworm/amd64/{NEW}/demo.qcow2", "bytes=120000-") in RangeHandler.requests
    assert _sha256(dest) == _sha256(source)
    assert not (dest.parent / ".demo.qcow2.partial").exists()


def test_osbake_sync_refuses_a_tampered_image(published: Published, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(published.repo, tree)
    image = next(tree.rglob(f"{NEW}/demo.qcow2"))
    data = bytearray(image.read_bytes())
    data[1000] ^= 0x01
    image.write_bytes(bytes(data))
    mirror = tmp_path / "mirror"
    with http_server(tree) as url:
        result = osbake(
            "sync", "--keyring", str(published.key.keyring), url, str(mirror), "ftype=disk1.img"
        )
    assert result.returncode == 4
    assert "demo.qcow2: checksum mismatch, refused" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(mirror.rglob(f"{NEW}/*demo.qcow2*"))  # neither final nor partial
    assert next(mirror.rglob(f"{OLD}/demo.qcow2")).exists()  # the good one arrived


def test_osbake_sync_refuses_a_tampered_products_file(published: Published, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(published.repo, tree)
    products = tree / "streams/v1/org.osbake:released:download.sjson"
    products.write_text(products.read_text().replace('"label": "release"', '"label": "rc"', 1))
    mirror = tmp_path / "mirror"
    result = osbake("sync", "--keyring", str(published.key.keyring), str(tree), str(mirror))
    assert result.returncode == 4
    assert "org.osbake:released:download.sjson: signature check failed, refused" in result.stderr
    assert "BAD signature" in result.stderr
    assert not mirror.exists() or not any(mirror.iterdir())


def test_osbake_sync_with_a_keyring_refuses_unsigned_streams(
    published: Published, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(published.repo, tree)
    for signed in (tree / "streams/v1").glob("*.sjson"):
        signed.write_text(json.dumps({"format": "index:1.0", "index": {}}))
    result = osbake(
        "sync", "--keyring", str(published.key.keyring), str(tree), str(tmp_path / "mirror")
    )
    assert result.returncode == 4
    assert "is not signed, and a keyring was given" in result.stderr


def test_publish_keep_prunes_old_versions_and_their_files(
    published: Published, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(published.repo, repo)
    third = make_build(tmp_path / "out", name="demo", finished="2026-11-22T09:00:00+00:00")
    result = osbake(
        "publish",
        str(third),
        "--repo",
        str(repo),
        "--sign",
        published.key.fingerprint,
        "--label",
        "release",
        "--keep",
        "2",
        env=published.key.env,
    )
    assert result.returncode == 0, result.stderr
    assert f"removed: demo/bookworm/amd64/{OLD}/demo.qcow2" in result.stdout
    assert not (repo / f"demo/bookworm/amd64/{OLD}").exists()
    assert (repo / f"demo/bookworm/amd64/{NEW}/demo.qcow2").exists()
    query = subprocess.run(
        [
            str(BIN / "sstream-query"),
            "--keyring",
            str(published.key.keyring),
            f"file://{repo}/streams/v1/index.sjson",
            "ftype=manifest",
            "--output-format",
            "%(version_name)s",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert query.returncode == 0, query.stderr
    assert sorted(query.stdout.split()) == [NEW, "20261122"]


def test_publish_without_sign_into_a_signed_tree_is_refused(
    published: Published, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(published.repo, repo)
    before = {p: p.read_bytes() for p in (repo / "streams/v1").iterdir()}
    third = make_build(tmp_path / "out", name="demo", finished="2026-11-22T09:00:00+00:00")
    result = osbake("publish", str(third), "--repo", str(repo))
    assert result.returncode == 2
    assert "is a signed tree" in result.stderr
    assert {p: p.read_bytes() for p in (repo / "streams/v1").iterdir()} == before
    assert not (repo / "demo/bookworm/amd64/20261122").exists()


def test_publish_with_an_unknown_key_is_refused(published: Published, tmp_path: Path) -> None:
    manifest = make_build(tmp_path / "out")
    result = osbake(
        "publish",
        str(manifest),
        "--repo",
        str(tmp_path / "repo"),
        "--sign",
        "nobody@example.org",
        env=published.key.env,
    )
    assert result.returncode == 2
    assert "gpg has no secret key 'nobody@example.org'" in result.stderr
    assert not (tmp_path / "repo").exists()


def test_one_recipe_built_for_two_arches_is_one_stream_filtered_by_arch(
    tmp_path: Path,
) -> None:
    # The cloud example's amd64 build and its arm64 variant: two products of one stream.
    with gpg_key(tmp_path) as key:
        disks = {}
        for arch, variant in (("amd64", None), ("arm64", "arm64")):
            image = "debian-cloud" + (f"-{variant}" if variant else "")
            disks[arch] = os.urandom(100_000) + arch.encode()
            build = make_build(
                tmp_path / f"out-{arch}",
                name="debian-cloud",
                variant=variant,
                arch=arch,
                files={f"{image}.qcow2": ("qcow2", disks[arch])},
                boot=["bios", "uefi"] if arch == "amd64" else ["uefi"],
            )
            result = osbake(
                "publish", str(build), "--repo", str(tmp_path / "repo"),
                "--sign", key.fingerprint, env=key.env,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
        with http_server(tmp_path / "repo") as url:
            for arch in ("arm64", "amd64"):
                query = subprocess.run(
                    [
                        str(BIN / "sstream-query"), "--keyring", str(key.keyring),
                        url + "streams/v1/index.sjson", f"arch={arch}", "ftype=disk1.img",
                        "--output-format", "%(arch)s %(sha256)s %(boot)s",
                    ],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                assert query.returncode == 0, query.stderr
                lines = [line for line in query.stdout.splitlines() if line.strip()]
                boot = "uefi" if arch == "arm64" else "bios,uefi"
                digest = hashlib.sha256(disks[arch]).hexdigest()
                assert lines == [f"{arch} {digest} {boot}"], query.stdout
