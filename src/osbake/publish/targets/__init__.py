"""Where `osbake sync` puts images: one small plugin per kind, registered by its enum key.

A TARGET on the command line is a directory, `glance:[CLOUD]` (a cloud from
clouds.yaml, or the OS_* environment) or `ec2:REGION[,REGION...]` (the image is
made in the first region and copied to the others).
"""

from __future__ import annotations

import importlib
import pkgutil
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from osbake.events import Events
from osbake.publish.streams import Item, Tree


class TargetKind(StrEnum):
    DIRECTORY = "dir"
    GLANCE = "glance"
    EC2 = "ec2"


class Target:
    """Takes verified items. `has` makes a second sync transfer nothing.

    A sync asks `has` for every item first (a listing taken once is fine), then, for
    each item it did not have, takes the item's lock and asks `reconcile`, which looks
    again: another sync may have put the item there while this one waited.
    """

    kind: ClassVar[TargetKind]
    registry: ClassVar[dict[TargetKind, type[Target]]] = {}
    # Who is syncing (this host and cache folder; see staging.sync_owner): clouds tag
    # what a sync makes with it, so that the next sync from here knows its leftovers.
    owner: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            Target.registry[cls.kind] = cls

    @classmethod
    def from_spec(cls, spec: str) -> Target:
        """Make the target from the text after 'KIND:' on the command line."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def accepts(self, item: Item) -> bool:
        """Whether this kind of target takes this kind of file at all."""
        return True

    def has(self, item: Item) -> bool:
        raise NotImplementedError

    def reconcile(self, item: Item, events: Events) -> bool:
        """With the item's lock held: look afresh, remove what interrupted syncs left of
        the item, and complete it from what the target holds if it can; True when the
        item is there now (nothing to download)."""
        return self.has(item)

    def destination(self, item: Item) -> Path | None:
        """Where to download the item to, or None for a staging file deleted after `put`."""
        return None

    def put(self, item: Item, path: Path, events: Events) -> None:
        """Take the downloaded, verified file (with the item's lock held). A target that
        copies the file elsewhere verifies it right before, and what arrived after."""

    def finish(self, trees: list[Tree], selected: list[Item], events: Events) -> None:
        """After every item: record what was synced (streams of a mirror, say)."""


def _load_plugins() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def open_target(spec: str) -> Target:
    """A target from its command-line form: DIR, glance:[CLOUD] or ec2:REGION[,REGION...]."""
    _load_plugins()
    kind, sep, rest = spec.partition(":")
    if sep and kind in {k.value for k in TargetKind} and kind != TargetKind.DIRECTORY:
        return Target.registry[TargetKind(kind)].from_spec(rest)
    if sep and kind == TargetKind.DIRECTORY:
        spec = rest
    return Target.registry[TargetKind.DIRECTORY].from_spec(spec)
