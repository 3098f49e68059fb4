"""Finding elements on the search path.

Precedence, highest first: the recipe's own `elements/` folder, then each folder of
OSBAKE_ELEMENTS_PATH in order, then the built-in elements. A higher folder may
replace an element of a lower one by using its name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from osbake.elements.model import Element, load_element
from osbake.errors import ElementError, Location

BUILTIN_DIR = Path(__file__).parent / "builtin"


@dataclass
class SearchPath:
    folders: list[tuple[Path, str]] = field(default_factory=list)  # highest precedence first

    @classmethod
    def for_recipe(cls, recipe_dir: Path | list[Path] | None, env: str | None = None) -> SearchPath:
        """The search path of a recipe: the elements/ folders beside it and beside every
        recipe it extends (its own first), OSBAKE_ELEMENTS_PATH, the built-in ones."""
        folders: list[tuple[Path, str]] = []
        dirs = recipe_dir if isinstance(recipe_dir, list) else [recipe_dir] if recipe_dir else []
        for folder in dirs:
            own = folder / "elements"
            if own.is_symlink():
                raise ElementError(
                    f"the recipe's elements folder {own} is a symlink (to {os.readlink(own)})",
                    location=Location(own),
                    hint="a recipe's elements must be inside its folder: make elements/ a "
                    "real folder, or add the other folder to OSBAKE_ELEMENTS_PATH",
                )
            if own.is_dir():
                folders.append((own.resolve(), "recipe"))
        value = os.environ.get("OSBAKE_ELEMENTS_PATH", "") if env is None else env
        for entry in value.split(":"):
            if entry:
                folders.append((Path(entry).resolve(), "OSBAKE_ELEMENTS_PATH"))
        folders.append((BUILTIN_DIR, "built-in"))
        return cls(folders)


class Catalog:
    """Every element visible on a search path, loaded lazily by name."""

    def __init__(self, search: SearchPath) -> None:
        self.search = search
        self._paths: dict[str, tuple[Path, str]] = {}
        self._shadowed: dict[str, list[Path]] = {}
        for folder, origin in search.folders:
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                if not (entry / "element.yaml").is_file():
                    continue
                if entry.name in self._paths:
                    self._shadowed.setdefault(entry.name, []).append(entry)
                else:
                    self._paths[entry.name] = (entry, origin)
        self._loaded: dict[str, Element] = {}

    def names(self) -> list[str]:
        return sorted(self._paths)

    def __contains__(self, name: str) -> bool:
        return name in self._paths

    def get(self, name: str) -> Element:
        if name not in self._loaded:
            if name not in self._paths:
                raise ElementError(
                    f"no element named '{name}'", hint=f"elements: {', '.join(self.names())}"
                )
            path, origin = self._paths[name]
            self._loaded[name] = load_element(path, origin)
        return self._loaded[name]

    def shadowed(self, name: str) -> list[Path]:
        """Lower-precedence elements of the same name that `name` replaces."""
        return self._shadowed.get(name, [])

    def providers(self, virtual: str) -> list[str]:
        """Every element that provides `virtual` (loads them all)."""
        return [n for n in self.names() if virtual in self.get(n).spec.provides]
