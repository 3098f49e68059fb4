"""An OCI image archive (oci-archive: an OCI image layout in a tarball).

One layer holding the root tree, a config with the arch and a default command,
and the index, as the OCI image spec describes. `skopeo copy oci-archive:X ...`
and `podman load -i X` accept it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osbake import run as runner
from osbake.arch import Arch
from osbake.manifest import file_sha256
from osbake.outputs import Output
from osbake.recipe import OutputFormat

if TYPE_CHECKING:
    from osbake.context import Context

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Oci(Output):
    format = OutputFormat.OCI
    suffix = ".oci.tar"

    def write(self, ctx: Context) -> Path:
        layout = ctx.workdir / "oci"
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        rootfs = ctx.rootfs_tar
        diff_id = file_sha256(rootfs)
        layer_tmp = blobs / "layer.tmp"
        with layer_tmp.open("wb") as out:
            runner.run(["pigz", "-c", "-n", "-T", str(rootfs)], stdout=out, events=ctx.events)
        layer_digest = file_sha256(layer_tmp)
        layer_tmp.rename(blobs / layer_digest)

        plan = ctx.plan
        platform = oci_platform(plan.arch)
        created = _created(ctx)
        config: dict[str, Any] = {
            "created": created,
            **platform,
            "config": {
                "Env": [f"PATH={DEFAULT_PATH}"],
                "Cmd": ["/bin/bash"],
                "Labels": {
                    "org.opencontainers.image.title": plan.recipe.name,
                    "org.opencontainers.image.description": plan.recipe.description,
                    "dev.osbake.variant": plan.variant or "",
                },
            },
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created": created, "created_by": f"osbake build {plan.image}"}],
        }
        config_digest, config_size = _write_blob(blobs, config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {
                "mediaType": MEDIA_CONFIG,
                "digest": f"sha256:{config_digest}",
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": MEDIA_LAYER,
                    "digest": f"sha256:{layer_digest}",
                    "size": (blobs / layer_digest).stat().st_size,
                }
            ],
            "annotations": {"org.opencontainers.image.created": created},
        }
        manifest_digest, manifest_size = _write_blob(blobs, manifest)
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": f"sha256:{manifest_digest}",
                    "size": manifest_size,
                    "platform": platform,
                    "annotations": {"org.opencontainers.image.ref.name": "latest"},
                }
            ],
        }
        (layout / "index.json").write_text(json.dumps(index, indent=2))
        (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        dest = ctx.output_path(self.suffix)
        runner.run(
            [
                "tar",
                "--create",
                f"--file={dest}",
                f"--directory={layout}",
                "--sort=name",
                "--numeric-owner",
                "--owner=0",
                "--group=0",
                "--mtime=@0",
                "oci-layout",
                "index.json",
                "blobs",
            ],
            events=ctx.events,
        )
        return dest


def oci_platform(arch: Arch) -> dict[str, str]:
    """The OCI platform of an image (GOARCH names, and the variant for ARM)."""
    info = arch.info
    platform = {"architecture": info.oci, "os": "linux"}
    if info.oci_variant:
        platform["variant"] = info.oci_variant
    return platform


def _write_blob(blobs: Path, document: dict[str, Any]) -> tuple[str, int]:
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return digest, len(data)


def _created(ctx: Context) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ctx.epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
