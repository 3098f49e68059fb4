"""OpenStack Glance: each disk item becomes one image, found again by its stream identity.

The image carries the simplestreams names (content_id, product_name, version_name,
item_name) as properties: a sync finds it by them (never by its name alone), and an
active image whose own checksums (computed by Glance) match the stream counts as there.
`osbake_sync_owner` says which host and cache folder uploaded it: the next sync from
there removes what an interrupted upload left (queued, saving or killed images); no
other sync from there can be working on them while it holds the item's lock. The file
is checked against the stream right before the upload, the bytes sent are hashed on
their way, and Glance's checksums must match them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from osbake.arch import Firmware, from_any
from osbake.errors import PublishError, UsageError, VerifyError
from osbake.events import Events
from osbake.extras import Extra, needs
from osbake.publish.download import CHUNK, file_digest, verify_file
from osbake.publish.streams import CHECKSUMS, DISK_FTYPES, Item
from osbake.publish.targets import Target, TargetKind

KEY_PROPERTIES = ("content_id", "product_name", "version_name", "item_name")
# Which host and cache folder uploaded the image (staging.sync_owner).
OWNER_PROPERTY = "osbake_sync_owner"
# The stream's checksum of the file, and the file's own hashes (as checked against it
# right before the upload): how an image of a stream that gives none of Glance's hash
# algorithms is known by Glance's hash of its data.
SOURCE_PROPERTY = "osbake_source"
FILE_PROPERTY = "osbake_file_"
# What an upload that did not finish leaves behind.
LEFTOVER_STATES = frozenset({"queued", "saving", "uploading", "importing", "killed"})


def glance_arch(name: str) -> str:
    """The `architecture` property Nova matches on, for a stream's arch (its own if unknown)."""
    arch = from_any(name)
    return arch.info.glance if arch is not None else name


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
        props["architecture"] = glance_arch(arch)
    if _uefi_only(fields):
        props["hw_firmware_type"] = "uefi"  # Nova boots it with UEFI, not a BIOS
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


def _uefi_only(fields: dict[str, str]) -> bool:
    """The image boots with UEFI and not with a BIOS (its `boot`, or its arch has none)."""
    modes = {m.strip() for m in fields.get("boot", "").split(",") if m.strip()}
    if modes:
        return "bios" not in modes and any(m.startswith("uefi") for m in modes)
    arch = from_any(fields.get("arch", ""))
    return (
        arch is not None and Firmware.BIOS not in arch.info.firmwares and bool(arch.info.grub_efi)
    )


def image_matches(image: Any, item: Item) -> bool:
    """An active image whose data, by Glance's own checksums, is the stream's file.

    Glance computes `checksum` (md5) and `os_hash_value` (sha512 by default) from the
    data it stored; every one the stream also gives must agree, and at least one must.
    A stream with none of Glance's algorithms (sha256 only, say) is matched through what
    osbake recorded when it uploaded the file it had checked against the stream: the
    file's hash in Glance's algorithm, which Glance's own must then equal.
    """
    if image.status != "active" or image.size != item.size:
        return False
    pairs = [(image.checksum, item.data.get("md5"))]
    if image.hash_algo:
        pairs.append((image.hash_value, item.data.get(image.hash_algo)))
    compared = [(got, want) for got, want in pairs if got and isinstance(want, str) and want]
    if compared:
        return all(got == want.lower() for got, want in compared)
    props = image.properties or {}
    checksum = item.checksum()
    return (
        checksum is not None
        and props.get(SOURCE_PROPERTY) == f"{checksum[0]}:{checksum[1]}"
        and bool(image.hash_algo and image.hash_value)
        and props.get(f"{FILE_PROPERTY}{image.hash_algo}") == image.hash_value
    )


class _Sending:
    """The file as the upload reads it: the bytes that were sent, counted and hashed."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle = handle
        self.size = size
        self.sent = 0
        self.hashes = {name: hashlib.new(name) for name in CHECKSUMS}

    def read(self, amount: int = -1) -> bytes:
        chunk = self.handle.read(amount if amount and amount > 0 else CHUNK)
        self.sent += len(chunk)
        for hasher in self.hashes.values():
            hasher.update(chunk)
        return chunk

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.read(CHUNK), b"")

    def digests(self) -> dict[str, str]:
        return {name: hasher.hexdigest() for name, hasher in self.hashes.items()}


def _osbake_made(image: Any) -> bool:
    """Uploaded by osbake (osbake deletes only images it made, and only of its item)."""
    props = image.properties or {}
    return bool(props.get(OWNER_PROPERTY) or props.get("source_sha256"))


def _created(image: Any) -> tuple[str, str]:
    """The order in which syncs agree on which of two copies stays: the oldest."""
    return (str(image.created_at or ""), str(image.id))


class GlanceTarget(Target):
    kind = TargetKind.GLANCE

    def __init__(self, connection: Any, *, name: str = "glance") -> None:
        self.connection = connection
        self.name = name
        self._listing: dict[tuple[str, ...], list[Any]] | None = None

    @classmethod
    def from_spec(cls, spec: str) -> GlanceTarget:
        with needs(Extra.PUBLISH, "the Glance target (glance:)"):
            import openstack
            import openstack.exceptions
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

    def _list(self) -> dict[tuple[str, ...], list[Any]]:
        """Every image that carries a stream identity, by that identity."""
        found: dict[tuple[str, ...], list[Any]] = {}
        try:
            for image in self.connection.image.images():
                props = image.properties or {}
                key = tuple(str(props.get(k, "")) for k in KEY_PROPERTIES)
                if all(key):
                    found.setdefault(key, []).append(image)
        except Exception as exc:  # openstacksdk raises many kinds
            raise PublishError(
                f"{self.name}: cannot list images ({exc})",
                hint="check the cloud's endpoint and credentials (clouds.yaml or OS_*)",
            ) from exc
        return found

    def _images_of(self, item: Item, listing: dict[tuple[str, ...], list[Any]]) -> list[Any]:
        key = tuple(image_properties(item)[k] for k in KEY_PROPERTIES)
        return listing.get(key, [])

    def has(self, item: Item) -> bool:
        if self._listing is None:
            self._listing = self._list()
        return any(image_matches(i, item) for i in self._images_of(item, self._listing))

    def reconcile(self, item: Item, events: Events) -> bool:
        """Look again; remove this item's leftovers, broken and duplicate images."""
        images = self._images_of(item, self._list())
        good = sorted((i for i in images if image_matches(i, item)), key=_created)
        for image in images:
            props = image.properties or {}
            if image in good[:1] or not _osbake_made(image):
                continue
            if image in good:
                why = f"a second copy of {good[0].id}"
            elif image.status == "active":
                why = "its data does not match the stream"
            elif image.status in LEFTOVER_STATES and props.get(OWNER_PROPERTY) == self.owner:
                why = f"left {image.status} by an interrupted sync"
            else:
                continue  # being uploaded by a sync elsewhere, or an operator's business
            self._delete(image, f"removed image {image.id} '{image.name}': {why}", events)
        return bool(good)

    def _delete(self, image: Any, why: str, events: Events) -> None:
        try:
            self.connection.image.delete_image(image, ignore_missing=True)
        except Exception as exc:  # openstacksdk raises many kinds
            if self._gone(image):
                # Another sync deleted it first (Glance answers a second delete with 400
                # "deleted to deleted" or 404): what this one wanted is done.
                events.log(f"{self.name}: image {image.id} was removed by another sync")
                return
            raise PublishError(
                f"{self.name}: cannot delete image {image.id} ({exc})",
                hint="check the cloud's policy: osbake deletes the images it left behind",
            ) from exc
        events.log(f"{self.name}: {why}")

    def _gone(self, image: Any) -> bool:
        """Whether the image is deleted (or being deleted) now, looked up afresh."""
        try:
            found = self.connection.image.find_image(image.id, ignore_missing=True)
        except Exception:  # the cloud does not answer: not known to be gone
            return False
        return found is None or found.status in ("deleted", "pending_delete")

    def put(self, item: Item, path: Path, events: Events) -> None:
        disk_format = DISK_FTYPES[item.ftype]
        name = image_name(item)
        digests = verify_file(item, path)  # right before it is sent
        size = path.stat().st_size
        checksum = item.checksum()
        assert checksum is not None  # verify_file refuses an item without one
        properties = {
            **image_properties(item),
            OWNER_PROPERTY: self.owner,
            SOURCE_PROPERTY: f"{checksum[0]}:{checksum[1]}",
            **{f"{FILE_PROPERTY}{algorithm}": value for algorithm, value in digests.items()},
        }
        events.log(f"uploading {path.name} to {self.name} as image '{name}' ({disk_format})")
        image_api = self.connection.image
        with path.open("rb") as handle:
            sending = _Sending(handle, size)
            try:
                image = image_api.create_image(
                    name=name,
                    data=sending,
                    size=size,
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
                    hint="check the cloud's image quota and the Glance logs; the next sync "
                    "removes what this one left",
                ) from exc
        sent = sending.digests()
        mismatch = []
        if sending.sent != size or sent != digests:
            mismatch.append(f"{sending.sent} bytes were sent, not the {size} bytes checked")
        if image.size is not None and image.size != size:
            mismatch.append(f"Glance stored {image.size} bytes of {size}")
        if image.checksum and image.checksum != sent["md5"]:
            mismatch.append(f"md5 {image.checksum} != {sent['md5']}")
        algo = image.hash_algo
        if algo and image.hash_value:
            local = sent.get(algo) or file_digest(path, algo)
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
        # A sync from elsewhere (another host or cache folder) may have uploaded the item
        # meanwhile: each sync keeps the first good image in a fixed order and deletes the
        # others it sees, so the last one to look leaves exactly one.
        good = sorted(
            (i for i in self._images_of(item, self._list()) if image_matches(i, item)),
            key=_created,
        )
        for other in good[1:]:
            if _osbake_made(other):
                self._delete(
                    other, f"removed image {other.id}: a second copy of {good[0].id}", events
                )
