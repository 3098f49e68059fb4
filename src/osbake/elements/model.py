"""What an element is: a directory with element.yaml, phase scripts and static files."""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from osbake.errors import ElementError, Location
from osbake.recipe import yamlpos
from osbake.recipe.model import Disk

SCRIPT_NAME = re.compile(r"^(\d{2,3})-[A-Za-z0-9][A-Za-z0-9._-]*$")
ELEMENT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class Phase(StrEnum):
    """Build phases, in the order they run."""

    ROOT = "root"
    PRE_INSTALL = "pre-install"
    INSTALL = "install"
    POST_INSTALL = "post-install"
    BLOCK_DEVICE = "block-device"
    FINALISE = "finalise"
    CLEANUP = "cleanup"

    @property
    def in_image(self) -> bool:
        """Whether scripts of this phase run inside the image (else on the host side)."""
        return self in (Phase.PRE_INSTALL, Phase.INSTALL, Phase.POST_INSTALL, Phase.FINALISE)


class OptionSpec(BaseModel):
    """One option an element accepts, with its type and default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["string", "integer", "boolean", "list", "records"] = "string"
    default: Any = None
    description: str = ""
    choices: list[str] | None = None
    fields: list[str] | None = Field(None, description="record fields, for type records")


class ElementSpec(BaseModel):
    """The contents of element.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    depends: list[str] = Field(default_factory=list)
    provides: list[str] = Field(default_factory=list)
    conflicts: list[str] = Field(default_factory=list)
    packages: list[str] = Field(default_factory=list)
    options: dict[str, OptionSpec] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict)
    disk: Disk | None = Field(None, description="a default disk layout (see the recipe's disk)")
    cmdline: list[str] = Field(
        default_factory=list, description="kernel command-line arguments to add"
    )


class Script:
    """One executable phase script of an element."""

    def __init__(self, element: str, phase: Phase, path: Path) -> None:
        self.element = element
        self.phase = phase
        self.path = path
        match = SCRIPT_NAME.match(path.name)
        self.order = int(match.group(1)) if match else 0

    @property
    def name(self) -> str:
        return f"{self.element}/{self.phase}/{self.path.name}"

    def sort_key(self) -> tuple[int, str, str]:
        return (self.order, self.element, self.path.name)


class Element:
    """An element found on the search path."""

    def __init__(
        self, name: str, path: Path, spec: ElementSpec, origin: str, positions: yamlpos.Positions
    ) -> None:
        self.name = name
        self.path = path
        self.spec = spec
        self.origin = origin
        self.positions = positions
        self._hashes: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Element({self.name!r}, {self.path})"

    @property
    def yaml_path(self) -> Path:
        return self.path / "element.yaml"

    def location(self, *key: str | int) -> Location:
        loc = self.positions.get(tuple(key))
        if loc is not None:
            return loc
        return Location(self.yaml_path, None, None, yamlpos.format_path(tuple(key)) or None)

    def scripts(self, phase: Phase) -> list[Script]:
        folder = self.path / phase.value
        if not folder.is_dir():
            return []
        return [Script(self.name, phase, p) for p in sorted(folder.iterdir()) if p.is_file()]

    @property
    def static_dir(self) -> Path | None:
        folder = self.path / "static"
        return folder if folder.is_dir() else None

    def content_hash(self, part: str = "all") -> str:
        """sha256 over the files of one part ('all', 'element.yaml', 'static', or a phase)."""
        if part not in self._hashes:
            if part == "all":
                paths = [self.path]
            elif part == "element.yaml":
                paths = [self.yaml_path]
            else:
                paths = [self.path / part]
            self._hashes[part] = hash_paths(paths, self.path)
        return self._hashes[part]


def hash_paths(paths: list[Path], relative_to: Path) -> str:
    """A digest of files and trees: names, kinds, executable bits, link targets, contents."""
    digest = hashlib.sha256()
    for top in paths:
        if not top.exists() and not top.is_symlink():
            continue
        items = [top] if not top.is_dir() else [top, *sorted(top.rglob("*"))]
        for item in items:
            rel = item.relative_to(relative_to).as_posix()
            if "__pycache__" in item.parts:
                continue
            if item.is_symlink():
                digest.update(f"L {rel} {os.readlink(item)}\n".encode())
            elif item.is_dir():
                digest.update(f"D {rel}\n".encode())
            elif item.is_file():
                mode = "x" if os.access(item, os.X_OK) else "-"
                digest.update(f"F {rel} {mode} {item.stat().st_size}\n".encode())
                with item.open("rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
    return digest.hexdigest()


def load_element(path: Path, origin: str) -> Element:
    """Read and check one element directory."""
    name = path.name
    yaml_path = path / "element.yaml"
    if not ELEMENT_NAME.match(name):
        raise ElementError(
            f"'{name}' is not a valid element name",
            location=Location(path),
            hint="use lowercase letters, digits, '.', '_' and '-'",
        )
    data, positions = yamlpos.load(yaml_path)
    try:
        spec = ElementSpec.model_validate(data or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        where = positions.get(loc) or positions.get(loc[:1]) or Location(yaml_path)
        key = yamlpos.format_path(loc)
        message, hint = f"'{key}': {err['msg']}", "see docs/elements.md for element.yaml"
        if err["type"] == "extra_forbidden":
            model = OptionSpec if len(loc) > 2 and loc[0] == "options" else ElementSpec
            known = list(model.model_fields)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            message = f"unknown key '{loc[-1]}'"
            hint = (
                f"did you mean '{close[0]}'? " if close else ""
            ) + f"the keys allowed here are: {', '.join(known)}"
        elif err["type"] in ("list_type", "string_type", "dict_type", "bool_type"):
            message = (
                f"'{key}' must be "
                + {
                    "list_type": "a list",
                    "string_type": "a string",
                    "dict_type": "a mapping",
                    "bool_type": "true or false",
                }[err["type"]]
            )
        raise ElementError(
            f"element '{name}': {message}",
            location=Location(where.file, where.line, None, key),
            hint=hint,
        ) from None
    element = Element(name, path, spec, origin, positions)
    _check_scripts(element)
    for option, option_spec in spec.options.items():
        if option_spec.type == "records" and not option_spec.fields:
            raise ElementError(
                f"element '{name}': option '{option}' of type records needs 'fields'",
                location=element.location("options", option),
            )
    return element


def _check_scripts(element: Element) -> None:
    for phase in Phase:
        for script in element.scripts(phase):
            if not SCRIPT_NAME.match(script.path.name):
                raise ElementError(
                    f"element '{element.name}': script '{phase}/{script.path.name}' has no "
                    "numeric prefix",
                    location=Location(script.path),
                    hint=f"rename it to e.g. '50-{script.path.name}'; scripts run in the "
                    "order of that number",
                )
            if not os.access(script.path, os.X_OK):
                raise ElementError(
                    f"element '{element.name}': script '{phase}/{script.path.name}' is not "
                    "executable",
                    location=Location(script.path),
                    hint=f"chmod +x {script.path}",
                )
