"""OpenStack Glance: each disk item becomes an image, named and tagged from its product.

The image carries the simplestreams names (content_id, product_name, version_name,
item_name) as properties, so a second sync finds it and uploads nothing. After
the upload, the checksums Glance computed are compared with the file's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from osbake.errors import PublishError, UsageError, VerifyError
from osbake.events import Events
from osbake.publish.download import file_digest
from osbake.publish.streams import DISK_FTYPES, Item
from osbake.publish.targets import Target, TargetKind

# Debian architecture names -> the `architecture` property Nova matches on.
ARCHITECTURES = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "i386": "i686",
    "armhf": "armv7l",
    "ppc64el": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
KEY_PROPERTIES = ("content_id", "product_name", "version_name", "item_name")


def image_name(item: Item) -> str:
    fields = item.fields()
    pubname = fields.get("pubname")
    if pubname:
        return pubname
    parts = [fields.get(k, "") for k in ("os", "release", "arch")] + [item.version]
    return "-".join(p for p in parts if p)


def image_properties(item: Item) -> dict[str, str]:
    """What Glance (and Nova's scheduler) should know about the image."""
    fields = item.fields()
    props = {key: fields[key] for key in KEY_PROPERTIES}
    arch = fields.get("arch")
    if arch:
        props["architecture"] = ARCHITECTURES.get(arch, arch)
    for source, target in (
        ("os", "os_distro"),
        ("version", "os_version"),
        ("release", "os_release"),
        ("label", "simplestreams_label"),
        ("recipe", "osbake_recipe"),
        ("variant", "osbake_variant"),
        ("recipe_sha256", "osbake_recipe_sha256"),
        ("sha256", "source_sha256"),
    ):
        if fields.get(source):
            props[target] = fields[source]
    return props


def _digests(path: Path) -> dict[str, str]:
    hashes = {name: hashlib.new(name) for name in ("md5", "sha256", "sha512")}
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            for h in hashes.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashes.items()}


class GlanceTarget(Target):
    kind = TargetKind.GLANCE

    def __init__(self, connection: Any, *, name: str = "glance") -> None:
        self.connection = connection
        self.name = name
        self._existing: dict[tuple[str, ...], Any] | None = None

    @classmethod
    def from_spec(cls, spec: str) -> GlanceTarget:
        try:
            import openstack
            import openstack.exceptions
        except ImportError as exc:  # pragma: no cover - a dependency of osbake
            raise PublishError("the Glance target needs openstacksdk") from exc
        try:
            connection = openstack.connect(cloud=spec) if spec else openstack.connect()
        except openstack.exceptions.ConfigException as exc:
            raise UsageError(
                f"glance:{spec}: {exc}",
                hint="name a cloud of clouds.yaml (glance:CLOUD) or set the OS_* variables",
            ) from exc
        return cls(connection, name=f"glance:{spec}" if spec else "glance")

    def describe(self) -> str:
        return self.name

    def accepts(self, item: Item) -> bool:
        return item.ftype in DISK_FTYPES

    def _images(self) -> dict[tuple[str, ...], Any]:
        if self._existing is None:
            self._existing = {}
            try:
                for image in self.connection.image.images():
                    props = image.properties or {}
                    key = tuple(str(props.get(k, "")) for k in KEY_PROPERTIES)
                    if image.status == "active" and all(key):
                        self._existing[key] = image
            except Exception as exc:  # openstacksdk raises many kinds
                raise PublishError(
                    f"{self.name}: cannot list images ({exc})",
                    hint="check the cloud's endpoint and credentials (clouds.yaml or OS_*)",
                ) from exc
        return self._existing

    def has(self, item: Item) -> bool:
        key = tuple(image_properties(item)[k] for k in KEY_PROPERTIES)
        return key in self._images()

    def put(self, item: Item, path: Path, events: Events) -> None:
        disk_format = DISK_FTYPES[item.ftype]
        name = image_name(item)
        digests = _digests(path)
        properties = image_properties(item)
        events.log(f"uploading {path.name} to {self.name} as image '{name}' ({disk_format})")
        image_api = self.connection.image
        try:
            with path.open("rb") as data:
                image = image_api.create_image(
                    name=name,
                    data=data,
                    disk_format=disk_format,
                    container_format="bare",
                    md5=digests["md5"],
                    sha256=digests["sha256"],
                    allow_duplicates=True,
                    validate_checksum=False,
                    wait=True,
                    **properties,
                )
            image = image_api.wait_for_status(
                image, status="active", failures=["killed"], wait=3600
            )
        except Exception as exc:
            raise PublishError(
                f"{self.name}: uploading {path.name} failed ({exc})",
                hint="check the cloud's image quota and the Glance logs",
            ) from exc
        mismatch = []
        if image.checksum and image.checksum != digests["md5"]:
            mismatch.append(f"md5 {image.checksum} != {digests['md5']}")
        algo = image.hash_algo
        if algo and image.hash_value:
            local = digests.get(algo) or file_digest(path, algo)
            if image.hash_value != local:
                mismatch.append(f"{algo} {image.hash_value[:16]}... != {local[:16]}...")
        if not (image.checksum or image.hash_value):
            mismatch.append("Glance reported no checksum")
        if mismatch:
            image_api.delete_image(image, ignore_missing=True)
            raise VerifyError(
                f"{self.name}: image '{name}' does not match the file that was uploaded "
                f"({'; '.join(mismatch)}); it was deleted",
                hint="the upload was damaged on the way; run the sync again",
            )
        events.log(f"{self.name}: image {image.id} '{name}' active, checksum verified")
        key = tuple(properties[k] for k in KEY_PROPERTIES)
        self._images()[key] = image
