"""The sync's integrity parts without processes: item locks, private partial files and their
adoption, size and checksum refusals, Glance's checksum rule, Content-Range parsing."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from osbake.errors import PublishError, VerifyError
from osbake.events import Events
from osbake.publish import publish, staging
from osbake.publish.download import fetch, verify_file
from osbake.publish.source import Source, _range_start, _range_total
from osbake.publish.streams import Item
from osbake.publish.sync import sync
from osbake.publish.targets.glance import image_matches
from tests.publish_helpers import make_build

DISK = "demo/bookworm/amd64/20261120/demo.qcow2"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    manifest = make_build(tmp_path / "out", files={"demo.qcow2": ("qcow2", os.urandom(3 << 20))})
    publish([manifest], tmp_path / "repo")
    return tmp_path / "repo"


def _disk_item(repo: Path) -> Item:
    source = Source(str(repo))
    (tree,) = source.streams()
    from osbake.publish.streams import items

    return next(i for i in items(tree) if i.name == "disk1.img")


def test_a_second_holder_waits_and_the_lock_file_goes(tmp_path: Path) -> None:
    dest = tmp_path / "d" / "image.qcow2"
    order: list[str] = []
    logs: list[dict] = []
    inside = threading.Event()

    def first() -> None:
        with staging.hold(dest, Events()):
            order.append("first in")
            inside.set()
            time.sleep(0.3)
            order.append("first out")

    def second() -> None:
        inside.wait()
        with staging.hold(dest, Events(logs.append)):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert order == ["first in", "first out", "second in"]
    assert any("waiting for another sync of image.qcow2" in e.get("line", "") for e in logs)
    assert not staging.lock_path(dest).exists()


def test_many_holders_never_overlap(tmp_path: Path) -> None:
    """The lock file is removed on release; a waiter that held the removed one takes the
    new one, so no two holders are ever inside together."""
    dest = tmp_path / "image.qcow2"
    inside = 0
    most = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, most
        for _ in range(20):
            with staging.hold(dest, Events()):
                with guard:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.001)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 1
    assert not staging.lock_path(dest).exists()


def test_leftovers_are_only_those_of_the_file(tmp_path: Path) -> None:
    dest = tmp_path / "demo.qcow2"
    for name in (
        ".demo.qcow2.partial",
        ".demo.qcow2.0123456789ab.partial",
        ".demo.qcow2.sig.partial",  # another file's
        ".demo.qcow2.0123456789ab.raw",
        ".demo.qcow2x.0123456789ab.partial",
    ):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in staging.leftovers(dest, "partial")] == [
        ".demo.qcow2.0123456789ab.partial",
        ".demo.qcow2.partial",
    ]
    mine = staging.private(dest, "partial")
    assert mine.name.startswith(".demo.qcow2.") and mine != staging.private(dest, "partial")


def test_a_download_adopts_the_longest_leftover_and_removes_the_rest(
    repo: Path, tmp_path: Path
) -> None:
    item = _disk_item(repo)
    data = (repo / DISK).read_bytes()
    dest = tmp_path / "mirror" / "demo.qcow2"
    dest.parent.mkdir()
    (dest.parent / ".demo.qcow2.partial").write_bytes(data[:1000])
    (dest.parent / ".demo.qcow2.aaaaaaaaaaaa.partial").write_bytes(data[: 2 << 20])
    (dest.parent / ".demo.qcow2.bbbbbbbbbbbb.partial").write_bytes(data + b"too long")
    transferred = fetch(Source(str(repo)), item, dest, Events())
    assert transferred == len(data) - (2 << 20)
    assert dest.read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["demo.qcow2"]


def test_a_complete_download_is_used_again_only_when_it_verifies(
    repo: Path, tmp_path: Path
) -> None:
    item = _disk_item(repo)
    data = (repo / DISK).read_bytes()
    dest = tmp_path / "stage" / "demo.qcow2"
    dest.parent.mkdir()
    dest.write_bytes(data)
    logs: list[dict] = []
    assert fetch(Source(str(repo)), item, dest, Events(logs.append)) == 0
    assert any("earlier run matches the stream" in e.get("line", "") for e in logs)
    dest.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # damaged in the cache
    assert fetch(Source(str(repo)), item, dest, Events()) == len(data)
    assert dest.read_bytes() == data


@pytest.mark.parametrize("change", [-1000, +1000], ids=["shorter", "longer"])
def test_a_source_file_of_another_size_is_refused_at_once(
    repo: Path, tmp_path: Path, change: int
) -> None:
    image = repo / DISK
    data = image.read_bytes()
    image.write_bytes(data[:change] if change < 0 else data + os.urandom(change))
    mirror = tmp_path / "mirror"
    for _ in range(2):
        with pytest.raises(VerifyError, match="size mismatch, refused: the file is"):
            sync(str(repo), str(mirror), filters=["ftype=disk1.img"])
        assert not list(mirror.rglob("*demo.qcow2*"))


def test_verify_file_checks_every_checksum_the_stream_gives(repo: Path, tmp_path: Path) -> None:
    item = _disk_item(repo)
    data = (repo / DISK).read_bytes()
    copy = tmp_path / "copy"
    copy.write_bytes(data)
    digests = verify_file(item, copy)
    assert digests["md5"] == hashlib.md5(data).hexdigest()
    wrong_md5 = Item(item.content_id, item.product, item.version, item.name, {**item.data})
    wrong_md5.data["md5"] = "0" * 32
    with pytest.raises(VerifyError, match="its md5 is"):
        verify_file(wrong_md5, copy)
    copy.write_bytes(data[:-1])
    with pytest.raises(VerifyError, match="size mismatch"):
        verify_file(item, copy)


def test_content_range_is_read() -> None:
    assert _range_start("bytes 100-199/200") == 100
    assert _range_total("bytes 100-199/200") == 200
    assert _range_total("bytes */1234") == 1234
    assert _range_start("bytes */1234") is None
    assert _range_total("bytes 0-9/*") is None
    assert _range_total(None) is None
    assert _range_total("garbage") is None


def _image(**fields: object) -> SimpleNamespace:
    data = {
        "status": "active",
        "size": 3,
        "checksum": None,
        "hash_algo": None,
        "hash_value": None,
        "properties": {},
    }
    return SimpleNamespace(**{**data, **fields})


def test_glance_counts_an_image_only_by_its_own_checksums() -> None:
    content = b"abc"
    item = Item(
        "c",
        "p",
        "v",
        "disk1.img",
        {
            "size": 3,
            "md5": hashlib.md5(content).hexdigest(),
            "sha512": hashlib.sha512(content).hexdigest(),
        },
    )
    md5 = hashlib.md5(content).hexdigest()
    sha512 = hashlib.sha512(content).hexdigest()
    assert image_matches(_image(checksum=md5, hash_algo="sha512", hash_value=sha512), item)
    assert image_matches(_image(checksum=md5), item)
    assert not image_matches(_image(checksum=md5, hash_algo="sha512", hash_value="0"), item)
    assert not image_matches(_image(checksum=md5, status="saving"), item)
    assert not image_matches(_image(checksum=md5, size=4), item)
    assert not image_matches(_image(), item)  # nothing to compare: not known to be the file
    # A stream with sha256 only: known by what osbake recorded when it uploaded the file.
    sha256 = hashlib.sha256(content).hexdigest()
    only = Item("c", "p", "v", "disk1.img", {"size": 3, "sha256": sha256})
    stored = {"checksum": md5, "hash_algo": "sha512", "hash_value": sha512}
    assert not image_matches(_image(**stored), only)
    recorded = {"osbake_source": f"sha256:{sha256}", "osbake_file_sha512": sha512}
    assert image_matches(_image(**stored, properties=recorded), only)
    other = {**recorded, "osbake_file_sha512": "0" * 128}  # the data is not that file
    assert not image_matches(_image(**stored, properties=other), only)


def test_a_huge_stream_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import osbake.publish.source as source_mod

    monkeypatch.setattr(source_mod, "STREAM_FILE_LIMIT", 1000)
    (tmp_path / "streams/v1").mkdir(parents=True)
    (tmp_path / "streams/v1/index.json").write_text(
        '{"format": "index:1.0", "index": {}}' + " " * 1000
    )
    with pytest.raises(PublishError, match="larger than 0 MiB, not a stream file"):
        Source(str(tmp_path)).streams()


class _RacingImages:
    """A Glance connection whose delete fails because another sync deleted it first."""

    def __init__(self, after: object) -> None:
        self.after = after

    def delete_image(self, image: object, ignore_missing: bool = True) -> None:
        raise RuntimeError("400 Bad Request: Image status transition from deleted to deleted")

    def find_image(self, name_or_id: str, ignore_missing: bool = True) -> object:
        return self.after


def test_glance_takes_an_image_another_sync_deleted_as_deleted() -> None:
    from types import SimpleNamespace

    from osbake.errors import PublishError
    from osbake.events import Events
    from osbake.publish.targets.glance import GlanceTarget

    image = SimpleNamespace(id="f03b5cd1", name="demo", status="active")
    for after in (None, SimpleNamespace(id="f03b5cd1", status="deleted")):
        target = GlanceTarget(SimpleNamespace(image=_RacingImages(after)))
        target._delete(image, "a second copy", Events())  # no error: it is gone
    target = GlanceTarget(SimpleNamespace(image=_RacingImages(image)))
    with pytest.raises(PublishError, match="cannot delete image f03b5cd1"):
        target._delete(image, "a second copy", Events())
