"""A real build of examples/debian-minimal.yaml, published signed, queried with the
reference client, and synced back with `osbake sync` (signature and checksums checked)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.publish_helpers import gpg_key, http_server

pytestmark = pytest.mark.e2e


def test_publish_a_real_build_and_sync_it_back(image_builds, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outdir = Path(image_builds.build("debian-minimal.yaml"))
    manifest_path = outdir / "debian-minimal.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    repo = tmp_path / "repo"
    with gpg_key(tmp_path) as key:
        published = subprocess.run(
            [
                sys.executable,
                "-m",
                "osbake",
                "publish",
                str(manifest_path),
                "--repo",
                str(repo),
                "--sign",
                key.fingerprint,
                "--label",
                "rc",
            ],
            env=key.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert published.returncode == 0, published.stderr
    serial = manifest["build"]["finished"][:10].replace("-", "")
    assert f"org.osbake:debian-minimal:bookworm:{manifest['arch']} {serial} (rc)" in (
        published.stdout
    )

    with http_server(repo) as url:
        query = subprocess.run(
            [
                str(Path(sys.executable).parent / "sstream-query"),
                "--keyring",
                str(key.keyring),
                url + "streams/v1/index.sjson",
                "--output-format",
                "%(ftype)s %(sha256)s",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert query.returncode == 0, query.stderr
        listed = dict(line.split() for line in query.stdout.splitlines())
        for artifact in manifest["artifacts"]:
            ftype = {"tar": "root.tar.zst", "tar.zst": "root.tar.zst", "oci": "oci.tar"}
            assert listed[ftype[artifact["format"]]] == artifact["sha256"]

        mirror = tmp_path / "mirror"
        synced = subprocess.run(
            [
                sys.executable,
                "-m",
                "osbake",
                "sync",
                "--keyring",
                str(key.keyring),
                url,
                str(mirror),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert synced.returncode == 0, synced.stderr
    folder = mirror / f"debian-minimal/bookworm/{manifest['arch']}/{serial}"
    for artifact in manifest["artifacts"]:
        data = (folder / artifact["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
    # From the mirrored image back to its manifest: `osbake inspect` verifies it.
    tarball = next(a["file"] for a in manifest["artifacts"] if a["file"].endswith(".tar.zst"))
    inspected = subprocess.run(
        [sys.executable, "-m", "osbake", "inspect", str(folder / tarball), "--summary"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert inspected.returncode == 0, inspected.stderr
    assert "matches the manifest" in inspected.stdout
