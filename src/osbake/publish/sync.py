"""`osbake sync`: mirror a simplestreams tree (ours or anyone's) into a target.

The story: read the source's streams (checking signatures with a keyring), pick
the items (filters, the newest N versions, what the target takes), skip what the
target has, download the rest in parallel (resumed, checked), hand each file to
the target, and let the target record what it now holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from osbake.errors import OsbakeError, UsageError, VerifyError
from osbake.events import Events, null_events
from osbake.publish import signing
from osbake.publish.download import fetch
from osbake.publish.filters import Filter, matches, parse_filters
from osbake.publish.source import Source
from osbake.publish.staging import hold, sync_owner
from osbake.publish.streams import Item, Tree, items, version_key
from osbake.publish.targets import Target, open_target
from osbake.settings import Settings


@dataclass
class SyncResult:
    source: str
    target: str
    selected: list[Item] = field(default_factory=list)
    transferred: list[Item] = field(default_factory=list)
    bytes: int = 0


def select(
    trees: Sequence[Tree],
    filters: Sequence[Filter],
    max_versions: int | None,
    target: Target | None = None,
) -> list[Item]:
    """The items to sync: matching the filters, taken by the target, newest N versions."""
    chosen = [
        item
        for tree in trees
        for item in items(tree)
        if item.path and matches(filters, item) and (target is None or target.accepts(item))
    ]
    if max_versions is None:
        return chosen
    versions: dict[tuple[str, str], set[str]] = {}
    for item in chosen:
        versions.setdefault((item.content_id, item.product), set()).add(item.version)
    newest = {
        key: set(sorted(names, key=version_key, reverse=True)[:max_versions])
        for key, names in versions.items()
    }
    return [i for i in chosen if i.version in newest[(i.content_id, i.product)]]


def _item_key(item: Item) -> str:
    """A stable name for an item's staging file (a cut-off download resumes from it)."""
    key = "\0".join((item.content_id, item.product, item.version, item.name))
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _unique(todo: list[Item], target: Target) -> list[Item]:
    """One download per destination: streams may list the same file (daily and released)."""
    seen: set[Path] = set()
    unique = []
    for item in todo:
        dest = target.destination(item)
        if dest is not None:
            if dest in seen:
                continue
            seen.add(dest)
        unique.append(item)
    return unique


def sync(
    source: str | Source,
    target: str | Target,
    *,
    keyring: Path | None = None,
    filters: Sequence[str | Filter] = (),
    max_versions: int | None = None,
    jobs: int = 4,
    events: Events | None = None,
    staging: Path | None = None,
) -> SyncResult:
    """Mirror `source` (a URL, directory or `Source`) into `target` (a spec or `Target`)."""
    events = events or null_events()
    if max_versions is not None and max_versions < 1:
        raise UsageError(f"--max {max_versions}: keep at least one version")
    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: use at least one")
    if keyring is not None:
        signing.check_keyring(keyring)
    parsed = [f if isinstance(f, Filter) else parse_filters([f])[0] for f in filters]
    src = source if isinstance(source, Source) else Source(source, keyring=keyring, events=events)
    tgt = target if isinstance(target, Target) else open_target(target)
    result = SyncResult(src.location, tgt.describe())

    events.step("read streams")
    trees = src.streams()
    result.selected = select(trees, parsed, max_versions, tgt)
    todo = _unique([item for item in result.selected if not tgt.has(item)], tgt)
    events.log(
        f"{len(result.selected)} items selected, {len(result.selected) - len(todo)} already "
        f"in {tgt.describe()}, {len(todo)} to transfer"
    )
    events.step("transfer")
    events.progress("total", 0, sum(i.size or 0 for i in todo))
    # Files for a cloud are staged in the cache (a cut-off download resumes from there, a
    # complete one is used again) and deleted once the cloud has them.
    stage = staging or Settings.from_environment().cache_dir / "sync"
    if not tgt.owner:
        tgt.owner = sync_owner(stage)

    def transfer(item: Item) -> int | None:
        """Bytes downloaded for the item, or None when another sync put it there meanwhile."""
        assert item.path is not None
        name = item.path.rsplit("/", 1)[-1]
        dest = tgt.destination(item)
        staged = dest is None
        if dest is None:
            dest = stage / f"{_item_key(item)}-{name}"
        with hold(dest, events, what=name):
            # A sync that held the lock before this one may have done the work.
            if tgt.reconcile(item, events):
                events.log(f"{name}: in {tgt.describe()} now (another sync put it there)")
                return None
            count = fetch(src, item, dest, events)
            try:
                tgt.put(item, dest, events)
            except VerifyError:
                if staged:  # a file the target refused is not used again
                    dest.unlink(missing_ok=True)
                raise
            if staged:
                dest.unlink(missing_ok=True)
        return count

    failed: list[tuple[Item, OsbakeError]] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [(item, pool.submit(transfer, item)) for item in todo]
        try:
            for item, future in futures:
                try:
                    count = future.result()
                    if count is not None:
                        result.bytes += count
                        result.transferred.append(item)
                except OsbakeError as exc:
                    failed.append((item, exc))
        except BaseException:
            for _, future in futures:
                future.cancel()
            raise
    # What did arrive is recorded (the next run skips it), then the first failure is raised.
    events.step("record")
    refused = {id(item) for item, _ in failed}
    tgt.finish(trees, [i for i in result.selected if id(i) not in refused], events)
    if failed:
        first = failed[0][1]
        if len(failed) > 1:
            first.message += f" (and {len(failed) - 1} more files failed)"
        raise first
    return result
