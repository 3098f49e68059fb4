"""The foundation end to end: a real Debian build into a tarball and an OCI image."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from osbake.manifest import file_sha256, load_manifest
from tests.conftest import ImageBuilds

pytestmark = pytest.mark.e2e


def osbake(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osbake", *argv],
        capture_output=True,
        text=True,
        check=False,
        **kwargs,
    )  # type: ignore[call-overload]


def tar_members(path: Path) -> dict[str, bytes | None]:
    listing = subprocess.run(
        ["tar", "-tvf", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[-1]: None for line in listing.splitlines()}


def tar_read(path: Path, member: str) -> str:
    return subprocess.run(
        ["tar", "-xOf", str(path), member], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def minimal(image_builds: ImageBuilds) -> Path:
    return image_builds.build("debian-minimal.yaml")


def test_artifacts_and_manifest(minimal: Path) -> None:
    manifest = load_manifest(minimal / "debian-minimal.manifest.json")
    files = {a.file: a for a in manifest.artifacts}
    assert set(files) == {"debian-minimal.tar.zst", "debian-minimal.oci.tar"}
    for name, entry in files.items():
        assert file_sha256(minimal / name) == entry.sha256
        assert (minimal / name).stat().st_size == entry.size
    names = {p.name: p for p in manifest.packages}
    assert "less" in names and "ca-certificates" in names and "base-files" in names
    assert names["base-files"].version.startswith("12")
    assert {e.name for e in manifest.elements} >= {"base", "debian", "users", "files", "run"}
    assert manifest.mirror and all(len(m.sha256) == 64 for m in manifest.mirror)
    assert [s.name for s in manifest.steps][:2] == ["bootstrap", "root"]
    assert all(s.seconds >= 0 for s in manifest.steps)
    # nothing half-written beside the artifacts
    assert not [p for p in minimal.iterdir() if p.name.endswith(".partial")]


def test_recipe_took_effect(minimal: Path) -> None:
    tarball = minimal / "debian-minimal.tar.zst"
    assert tar_read(tarball, "./etc/motd").startswith("Welcome to a Debian image built by")
    assert tar_read(tarball, "./etc/osbake-release") == "built by osbake\n"
    assert "debian:x:1000:1000::/home/debian:/bin/bash" in tar_read(tarball, "./etc/passwd")
    groups = tar_read(tarball, "./etc/group")
    assert any(line.startswith("adm:") and "debian" in line for line in groups.splitlines())
    sudoers = tar_read(tarball, "./etc/sudoers.d/90-osbake-debian")
    assert sudoers == "debian ALL=(ALL) NOPASSWD:ALL\n"
    assert tar_read(tarball, "./etc/timezone") == "Etc/UTC\n"
    assert tar_read(tarball, "./etc/hostname") == "localhost\n"
    members = tar_members(tarball)
    if "./etc/machine-id" in members:  # only with systemd
        assert tar_read(tarball, "./etc/machine-id") == ""
    assert "./usr/sbin/policy-rc.d" not in members
    assert "./etc/resolv.conf" not in members


def test_manifest_inside_the_image(minimal: Path) -> None:
    tarball = minimal / "debian-minimal.tar.zst"
    inside = json.loads(tar_read(tarball, "./usr/share/osbake/manifest.json"))
    beside = load_manifest(minimal / "debian-minimal.manifest.json")
    assert inside["recipe_sha256"] == beside.recipe_sha256
    assert len(inside["packages"]) == len(beside.packages)
    assert "name: debian-minimal" in tar_read(tarball, "./usr/share/osbake/recipe.yaml")


def test_inspect(minimal: Path) -> None:
    manifest = load_manifest(minimal / "debian-minimal.manifest.json")
    result = osbake("inspect", str(minimal / "debian-minimal.tar.zst"))
    assert result.returncode == 0, result.stderr
    assert manifest.recipe_sha256 in result.stdout
    assert "matches the manifest" in result.stdout
    less = manifest.package("less")
    assert less is not None and less.version in result.stdout


def test_inspect_without_manifest_beside(minimal: Path, tmp_path: Path) -> None:
    for name in ("debian-minimal.tar.zst", "debian-minimal.oci.tar"):
        copy = tmp_path / name
        copy.write_bytes((minimal / name).read_bytes())
        result = osbake("inspect", "--json", str(copy))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["name"] == "debian-minimal"


def test_inspect_detects_a_changed_file(minimal: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    data = bytearray((minimal / "debian-minimal.tar.zst").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "debian-minimal.tar.zst").write_bytes(bytes(data))
    (out / "debian-minimal.manifest.json").write_bytes(
        (minimal / "debian-minimal.manifest.json").read_bytes()
    )
    result = osbake("inspect", str(out / "debian-minimal.tar.zst"))
    assert result.returncode == 1
    assert "DOES NOT match" in result.stdout


def test_oci_archive_is_accepted_by_real_tools(minimal: Path, tmp_path: Path) -> None:
    archive = minimal / "debian-minimal.oci.tar"
    info = subprocess.run(
        ["skopeo", "inspect", f"oci-archive:{archive}"], capture_output=True, text=True, check=True
    )
    data = json.loads(info.stdout)
    assert data["Architecture"] == "amd64" and data["Os"] == "linux"
    # umoci unpacks the layout into a runtime bundle with the image's files.
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(archive) as handle:
        handle.extractall(layout, filter="data")
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert (bundle / "rootfs" / "etc" / "osbake-release").read_text() == "built by osbake\n"
    assert json.loads((bundle / "config.json").read_text())["process"]["args"] == ["/bin/bash"]


SMALL_RECIPE = """\
name: tiny
options:
  debian: {variant: apt}
packages: [less]
outputs: [tar]
"""


def test_interrupt_leaves_nothing_and_next_build_works(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(SMALL_RECIPE)
    out = tmp_path / "out"
    before = Path("/proc/self/mountinfo").read_text()
    cache = tmp_path / "cache"  # its own cache: the bootstrap must really run
    env = {**os.environ, "OSBAKE_CACHE_DIR": str(cache)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "osbake", "build", str(recipe), "-o", str(out), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    bootstrapping = False
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "command" and event["line"].startswith("mmdebstrap "):
            bootstrapping = True
        if event["event"] == "log" and "installing essential" in event["line"]:
            break
    assert bootstrapping, "the build never reached mmdebstrap"
    proc.send_signal(signal.SIGINT)
    _rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert Path("/proc/self/mountinfo").read_text() == before
    assert not list((cache / "work").glob("*")), "the interrupted build left its work dir"
    assert not list((cache / "store" / "tmp").glob("*")), "a half-made cache entry was left"
    leftovers = subprocess.run(["pgrep", "-f", str(cache)], capture_output=True, text=True)
    assert leftovers.stdout == ""
    assert not out.exists() or not list(out.iterdir())
    result = osbake("build", str(recipe), "-o", str(out), env=env)
    assert result.returncode == 0, result.stderr
    assert (out / "tiny.tar.zst").is_file()


def test_sigkill_leaves_no_mounts_or_processes(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(SMALL_RECIPE)
    before = Path("/proc/self/mountinfo").read_text()
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "osbake",
            "build",
            str(recipe),
            "-o",
            str(tmp_path / "out"),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "OSBAKE_CACHE_DIR": str(cache)},
    )
    assert proc.stdout is not None
    bootstrapping = False
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "command" and event["line"].startswith("mmdebstrap "):
            bootstrapping = True
        if event["event"] == "log" and "installing essential" in event["line"]:
            break
    assert bootstrapping, "the build never reached mmdebstrap"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = subprocess.run(["pgrep", "-f", str(cache)], capture_output=True, text=True).stdout
        if not left:
            break
        time.sleep(0.5)
    assert left == ""
    assert Path("/proc/self/mountinfo").read_text() == before


def test_an_spdx_sbom_beside_the_manifest_and_inside_the_image(minimal: Path) -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    beside = minimal / "debian-minimal.spdx.json"
    parsed = parse_file(str(beside))
    assert [m.validation_message for m in validate_full_spdx_document(parsed)] == []
    document = json.loads(beside.read_text())
    inside = tar_read(minimal / "debian-minimal.tar.zst", "./usr/share/osbake/sbom.spdx.json")
    assert json.loads(inside) == document
    manifest = load_manifest(minimal / "debian-minimal.manifest.json")
    packages = {p["name"]: p for p in document["packages"] if p["SPDXID"] != "SPDXRef-Image"}
    assert set(packages) == {p.name for p in manifest.packages}
    # Debian's copyright files give most packages a license; the .debs are at hand.
    licensed = [p for p in packages.values() if p["licenseDeclared"] != "NOASSERTION"]
    assert len(licensed) > 0.8 * len(packages), len(licensed)
    summed = [p for p in packages.values() if p.get("checksums")]
    assert len(summed) > 0.8 * len(packages), len(summed)
    assert packages["bash"]["licenseDeclared"].startswith("GPL-3.0-or-later")
    depends = [r for r in document["relationships"] if r["relationshipType"] == "DEPENDS_ON"]
    assert len(depends) > len(packages)
    assert not document["creationInfo"]["created"].startswith("1970")
