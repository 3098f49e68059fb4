from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from osbake.cache import CacheError, Store
from osbake.errors import HostError
from osbake.settings import Settings

pytestmark = pytest.mark.real_subprocess  # removing entries runs rm


def put(store: Store, key: str, step: str, size: int, parent: str | None = None) -> None:
    writer = store.begin(key, step)
    (writer.layer / "file").write_bytes(b"x" * size)
    writer.commit({"step": step, "parent": parent})


def test_commit_then_lookup(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.lookup("k1") is None
    put(store, "k1", "bootstrap", 10)
    entry = store.lookup("k1", verify=True)
    assert entry is not None
    assert entry.step == "bootstrap"
    assert (entry.layer / "file").read_bytes() == b"x" * 10
    assert list(store.tmp_dir.iterdir()) == []


def test_the_callers_metadata_comes_back_as_written(tmp_path: Path) -> None:
    store = Store(tmp_path)
    writer = store.begin("k1", "disk")
    (writer.path / "disk.raw").write_bytes(b"\0" * 4096)
    disk = {"size": 4096, "partitions": [{"number": 1}]}
    writer.commit({"step": "disk", "parent": None, "disk": disk})
    entry = store.lookup("k1", verify=True)
    assert entry is not None and entry.meta["disk"] == disk
    with pytest.raises(ValueError, match="bytes"):
        store.begin("k2", "disk").commit({"bytes": 1})


def test_an_unfinished_entry_is_invisible_and_reaped(tmp_path: Path) -> None:
    store = Store(tmp_path)
    writer = store.begin("k1", "bootstrap")
    (writer.layer / "half").write_text("half written")
    assert store.lookup("k1") is None
    assert writer.claim.lock is not None
    writer.claim.lock.close()  # as if the build was killed: its lock is gone
    assert store.reap() == 1
    assert list(store.tmp_dir.iterdir()) == []


def test_a_damaged_entry_fails_verification_and_is_dropped(tmp_path: Path) -> None:
    store = Store(tmp_path)
    put(store, "k1", "bootstrap", 10)
    entry = store.lookup("k1")
    assert entry is not None
    (entry.layer / "file").write_bytes(b"short")
    assert store.lookup("k1", verify=True) is None
    assert store.lookup("k1") is None


def test_two_writers_of_one_key(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first, second = store.begin("k1", "s"), store.begin("k1", "s")
    (first.layer / "a").write_text("1")
    (second.layer / "a").write_text("1")
    first.commit({"step": "s"})
    second.commit({"step": "s"})  # loses the race quietly
    assert store.lookup("k1", verify=True) is not None
    assert list(store.tmp_dir.iterdir()) == []


def test_gc_evicts_least_recently_used_with_dependents(tmp_path: Path) -> None:
    store = Store(tmp_path)
    put(store, "old", "bootstrap", 40960)
    put(store, "old-child", "root", 4096, parent="old")
    put(store, "new", "bootstrap", 40960)
    past = time.time() - 1000
    os.utime(store.entry_path("old") / "meta.json", (past, past))
    os.utime(store.entry_path("old-child") / "meta.json", (past + 1, past + 1))
    removed = store.gc(max_size=50000)
    assert {e.key for e in removed} == {"old", "old-child"}
    assert store.lookup("new") is not None


def test_gc_never_removes_an_entry_in_use(tmp_path: Path) -> None:
    store = Store(tmp_path)
    put(store, "busy", "bootstrap", 40960)
    other = Store(tmp_path)
    entry = other.lookup("busy")
    assert entry is not None
    other.use(entry)
    assert store.gc(max_size=0) == []
    other.release()
    assert [e.key for e in store.gc(max_size=0)] == ["busy"]


def test_locks_are_real(tmp_path: Path) -> None:
    store = Store(tmp_path)
    put(store, "k", "s", 1)
    entry = store.lookup("k")
    assert entry is not None
    store.use(entry)
    with (store.locks_dir / "k.lock").open("a") as handle, pytest.raises(BlockingIOError):
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    store.release()


def test_a_bad_budget_in_the_environment_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OSBAKE_CACHE_MAX", "lots")
    with pytest.raises(CacheError) as info:
        Store(tmp_path)
    assert "OSBAKE_CACHE_MAX='lots' is not a size" in info.value.message
    assert "20GiB" in (info.value.hint or "")


def test_a_cache_folder_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(HostError) as info:
        Settings(blocker).check_writable()
    assert f"cannot write to the cache folder {blocker}/work" in info.value.message
    assert "OSBAKE_CACHE_DIR" in (info.value.hint or "")


def test_an_entry_evicted_before_its_hold_is_not_used(tmp_path: Path) -> None:
    store = Store(tmp_path)
    put(store, "k1", "bootstrap", 10)
    entry = store.lookup("k1")
    assert entry is not None
    Store(tmp_path).gc(max_size=0)  # another process evicts it between lookup and use
    assert store.use(entry) is False
    put(store, "k2", "bootstrap", 10)
    held = store.lookup("k2")
    assert held is not None and store.use(held) is True
    assert Store(tmp_path).gc(max_size=0) == []  # held: not evicted
