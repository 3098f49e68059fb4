"""A local directory: the synced files under their stream paths, and streams listing them,
so that the directory is a simplestreams tree itself (serve it, or sync from it)."""

from __future__ import annotations

import json
from pathlib import Path

from osbake.errors import UsageError
from osbake.events import Events
from osbake.publish import pages
from osbake.publish.download import file_digest
from osbake.publish.streams import PRODUCTS_FORMAT, Item, Tree, items
from osbake.publish.targets import Target, TargetKind
from osbake.publish.tree import (
    delete_unreferenced,
    read_streams,
    referenced,
    tree_lock,
    write_streams,
)


def _scalars(data: Tree) -> Tree:
    return {k: v for k, v in data.items() if not isinstance(v, dict | list)}


class DirectoryTarget(Target):
    kind = TargetKind.DIRECTORY

    def __init__(self, root: Path) -> None:
        if root.exists() and not root.is_dir():
            raise UsageError(f"{root}: not a directory", hint="give a directory to mirror into")
        self.root = root
        self.products: dict[str, Tree] = read_streams(root) if root.is_dir() else {}
        self.known = {
            (item.path, item.checksum()) for tree in self.products.values() for item in items(tree)
        }

    @classmethod
    def from_spec(cls, spec: str) -> DirectoryTarget:
        return cls(Path(spec))

    def describe(self) -> str:
        return str(self.root)

    def has(self, item: Item) -> bool:
        assert item.path is not None
        path = self.root / item.path
        if not path.is_file() or path.stat().st_size != item.size:
            return False
        if (item.path, item.checksum()) in self.known:
            return True
        # There but not recorded (an earlier sync stopped before writing its streams).
        checksum = item.checksum()
        return checksum is not None and file_digest(path, checksum[0]) == checksum[1]

    def destination(self, item: Item) -> Path:
        assert item.path is not None
        return self.root / item.path

    def finish(self, trees: list[Tree], selected: list[Item], events: Events) -> None:
        """The mirror's streams list exactly what was selected from each source stream.

        Under the tree's lock (a publisher's and every sync's into this directory), with
        the streams read again: another sync may have written them since this one began.
        Only files that are there whole are listed.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with tree_lock(self.root):
            self.products = read_streams(self.root)
            before = referenced(self.products)
            chosen = {
                (i.content_id, i.product, i.version, i.name)
                for i in selected
                if self._whole(i, events)
            }
            for tree in trees:
                self.products[str(tree["content_id"])] = _selection(tree, chosen)
            write_streams(self.root, self.products, changed=set(self.products), events=events)
            for path in delete_unreferenced(self.root, before, referenced(self.products)):
                events.log(f"removed {path} (no longer in the source's selection)")
            pages.write_root_page(self.root, self.products)

    def _whole(self, item: Item, events: Events) -> bool:
        assert item.path is not None
        path = self.root / item.path
        if path.is_file() and path.stat().st_size == item.size:
            return True
        events.log(f"{item.path}: not in {self.root} (or not whole), so not listed")
        return False


def _selection(tree: Tree, chosen: set[tuple[str, str, str, str]]) -> Tree:
    """The part of a products tree that was chosen, with the fields of every level."""
    cid = str(tree["content_id"])
    local: Tree = {**_scalars(tree), "format": PRODUCTS_FORMAT, "products": {}}
    for pname, product in (tree.get("products") or {}).items():
        for vname, version in (product.get("versions") or {}).items():
            for iname, item in (version.get("items") or {}).items():
                if (cid, pname, vname, iname) not in chosen:
                    continue
                lproduct = local["products"].setdefault(
                    pname, {**_scalars(product), "versions": {}}
                )
                lversion = lproduct["versions"].setdefault(
                    vname, {**_scalars(version), "items": {}}
                )
                lversion["items"][iname] = json.loads(json.dumps(item))
    return local
