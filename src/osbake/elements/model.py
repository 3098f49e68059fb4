"""What an element is: a directory with element.yaml, phase scripts and static files."""

from __future__ import annotations

import copy
import difflib
import hashlib
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from osbake import formats
from osbake.arch import Arch
from osbake.errors import ElementError, Location
from osbake.recipe import yamlpos
from osbake.recipe.files import link_stays_inside, walk_tree
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


# Every phase folder name: the rest of an element folder is shared by its phases.
PHASE_FOLDERS = frozenset(phase.value for phase in Phase)


OPTION_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# Variables an element may not set for every script: what the shell, the dynamic
# loader and osbake itself read.
RESERVED_VARIABLES = frozenset(
    {"PATH", "HOME", "IFS", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "PS4", "CDPATH"}
)
MAX_INTEGER = 2**63 - 1


def _option_name(value: str) -> str:
    if not OPTION_NAME.fullmatch(value):
        raise formats.FormatError(
            f"{formats.shown(value)} is not a valid option name",
            "start with a lower-case letter, then lower-case letters, digits, '_' or '-' "
            "(scripts get it as OSBAKE_OPT_<NAME>)",
        )
    return value


def _variable(value: str) -> str:
    formats.env_name(value, "variable name")
    if value in RESERVED_VARIABLES or value.startswith(("LD_", "OSBAKE_")):
        raise formats.FormatError(
            f"an element may not set {value} for every script",
            "use another name; PATH, HOME, IFS, ENV, BASH_ENV, LD_* and OSBAKE_* are osbake's "
            "or the shell's",
        )
    return value


def _one_word(value: str) -> str:
    if not value or " " in value:
        raise formats.FormatError(
            f"{formats.shown(value)} is not one kernel command-line argument",
            "give each argument as its own list item, e.g. [console=tty0, quiet]",
        )
    return value


# What a kernel command-line argument of an element may take from the architecture
# (console=${OSBAKE_CONSOLE},115200): the variables scripts also get.
CMDLINE_VARIABLES = ("OSBAKE_ARCH", "OSBAKE_CONSOLE")
CMDLINE_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]*)\}")


def _cmdline_word(value: str) -> str:
    for name in CMDLINE_VARIABLE.findall(value):
        if name not in CMDLINE_VARIABLES:
            raise formats.FormatError(
                f"{formats.shown(value)} names ${{{name}}}, which osbake does not fill in",
                f"use {' or '.join('${' + v + '}' for v in CMDLINE_VARIABLES)}",
            )
    formats.cmdline(CMDLINE_VARIABLE.sub("x", value), "kernel command-line argument")
    return _one_word(value)


def expand_cmdline(word: str, arch: Arch) -> str:
    """An element's kernel command-line argument with the architecture's values in it."""
    values = arch.info.environment()
    return CMDLINE_VARIABLE.sub(lambda m: values[m.group(1)], word)


OptionName = Annotated[str, AfterValidator(_option_name)]
ElementRef = Annotated[str, AfterValidator(lambda v: formats.name(v, "element name"))]
Package = Annotated[str, AfterValidator(lambda v: formats.package_spec(v, "package"))]
Variable = Annotated[str, AfterValidator(_variable)]
VariableValue = Annotated[str, AfterValidator(lambda v: formats.line(v, "the value"))]
Description = Annotated[str, AfterValidator(lambda v: formats.text(v, "description", 8192))]
CmdlineWord = Annotated[str, AfterValidator(_cmdline_word)]
Choice = Annotated[str, AfterValidator(lambda v: formats.line(v, "choice", 256))]


ValueType = Literal["string", "integer", "boolean", "list"]


class FieldSpec(BaseModel):
    """One field of a records option, with its type and format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ValueType = "string"
    format: formats.Format | None = Field(
        None, description="the format of the value (or of each item of a list)"
    )
    description: Description = ""


class OptionSpec(BaseModel):
    """One option an element accepts, with its type and default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["string", "integer", "boolean", "list", "records"] = "string"
    default: Any = None
    description: Description = ""
    choices: list[Choice] | None = None
    format: formats.Format | None = Field(
        None,
        description="the format of a string (or of each item of a list); without it, one "
        "line of text",
    )
    fields: dict[OptionName, FieldSpec | None] | None = Field(
        None,
        description="record fields, for type records: a list of names, or a mapping of "
        "name to {type, format}",
    )

    @field_validator("fields", mode="before")
    @classmethod
    def _field_list(cls, value: Any) -> Any:
        """A list of names is the short form of fields without a declared type."""
        if isinstance(value, list):
            if any(not isinstance(v, str) for v in value):
                raise formats.FormatError(
                    "fields must be a list of names", "e.g. fields: [name, groups]"
                )
            if len(set(value)) != len(value):
                raise formats.FormatError("a field is listed twice", "list each field once")
            return dict.fromkeys(value)
        return value

    def field_specs(self) -> dict[str, FieldSpec | None]:
        """The record fields in their order; None for an untyped one."""
        return dict(self.fields or {})


class ElementSpec(BaseModel):
    """The contents of element.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: Description = ""
    depends: list[ElementRef] = Field(default_factory=list)
    provides: list[ElementRef] = Field(default_factory=list)
    conflicts: list[ElementRef] = Field(default_factory=list)
    packages: list[Package] = Field(default_factory=list)
    options: dict[OptionName, OptionSpec] = Field(default_factory=dict)
    environment: dict[Variable, VariableValue] = Field(default_factory=dict)
    disk: Disk | None = Field(None, description="a default disk layout (see the recipe's disk)")
    cmdline: list[CmdlineWord] = Field(
        default_factory=list,
        description="kernel command-line arguments to add; ${OSBAKE_CONSOLE} and "
        "${OSBAKE_ARCH} are the architecture's serial console and name",
    )

    def cmdline_for(self, arch: Arch) -> list[str]:
        """The kernel command-line arguments, for an image of this architecture."""
        return [expand_cmdline(word, arch) for word in self.cmdline]


# -- option values -------------------------------------------------------------------------------


def check_value(spec: OptionSpec, value: Any, what: str) -> Any:
    """An option's value checked against its declaration (type, choices, format)."""
    if value is None:
        return None
    if spec.type == "records":
        return _records(spec, value, what)
    return _typed(spec.type, spec.format, value, what, spec.choices)


def _typed(
    kind: str,
    fmt: formats.Format | None,
    value: Any,
    what: str,
    choices: list[str] | None = None,
) -> Any:
    if kind == "string":
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise formats.FormatError(
                f"{what} must be a string, not {formats.type_name(value)}", "write it as text"
            )
        value = str(value)
        if choices and value not in choices:
            raise formats.FormatError(
                f"{what} must be one of: {', '.join(choices)} (not {formats.shown(value)})",
                "YAML reads yes/no/on/off as booleans: quote them"
                if value in ("True", "False")
                else f"use one of: {', '.join(choices)}",
            )
        if value:
            formats.check(fmt or formats.Format.LINE, value, what)
        return value
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise formats.FormatError(f"{what} must be a whole number", "e.g. 3")
        if abs(value) > MAX_INTEGER:
            raise formats.FormatError(f"{what} is out of range", f"use at most {MAX_INTEGER}")
        if fmt is not None:
            formats.check(fmt, value, what)
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise formats.FormatError(
                f"{what} must be true or false", "write true or false (not yes, no or a string)"
            )
        return value
    # a list (a single string is a one-item list)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in value
    ):
        raise formats.FormatError(f"{what} must be a list of strings", "e.g. [one, two]")
    items = [str(v) for v in value]
    for index, item in enumerate(items):
        try:
            formats.check(fmt or formats.Format.LINE, item, f"{what}, item {index + 1}")
        except formats.FormatError as exc:
            raise formats.FormatError(exc.message, exc.hint, (index, *exc.path)) from None
    return items


def _records(spec: OptionSpec, value: Any, what: str) -> Any:
    fields = spec.field_specs()
    names = ", ".join(fields)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise formats.FormatError(
            f"{what} must be a list of mappings with the keys {names}",
            f"e.g. [{{{next(iter(fields), 'name')}: ...}}]",
        )
    for number, record in enumerate(value, start=1):
        extra = [str(k) for k in record if k not in fields]
        if extra:
            raise formats.FormatError(
                f"{what} must be a list of mappings with only the keys {names} "
                f"(not {', '.join(sorted(formats.shown(e) for e in extra))})",
                f"remove {', '.join(sorted(formats.shown(e) for e in extra))}",
                (number - 1,),
            )
        for name, item in record.items():
            field = fields[name]
            where = f"{what}, record {number}, field '{name}'"
            try:
                if field is None:
                    _untyped(item, where)
                elif item is not None:
                    record[name] = _typed(field.type, field.format, item, where)
            except formats.FormatError as exc:
                raise formats.FormatError(
                    exc.message, exc.hint, (number - 1, name, *exc.path)
                ) from None
    return value


def _untyped(value: Any, what: str) -> None:
    """A field without a declared type: a scalar or a list of scalars, each one line."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict | list):
            raise formats.FormatError(
                f"{what} must be a value or a list of values", "e.g. name: x or groups: [a, b]"
            )
        if isinstance(item, str):
            formats.check(formats.Format.LINE, item, what)


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
        path = tuple(key)
        for n in range(len(path), -1, -1):
            loc = self.positions.get(path[:n])
            if loc is not None:
                return Location(loc.file, loc.line, loc.column, yamlpos.format_path(path) or None)
        return Location(self.yaml_path, None, None, yamlpos.format_path(path) or None)

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
        """sha256 over the files of one part ('all', 'element.yaml', 'static', or a phase).

        A phase's hash also covers the element's own files outside every phase folder
        (lib/, data lists, element.yaml): its scripts read them from OSBAKE_ELEMENT_DIR.
        """
        if part not in self._hashes:
            if part == "all":
                paths = [self.path]
            elif part == "element.yaml":
                paths = [self.yaml_path]
            elif part in PHASE_FOLDERS:
                shared = [p for p in self.path.iterdir() if p.name not in PHASE_FOLDERS]
                paths = [self.path / part, *sorted(shared)]
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
    if not ELEMENT_NAME.fullmatch(name) or len(name) > 64:
        raise ElementError(
            f"{formats.shown(name)} is not a valid element name",
            location=Location(path),
            hint="use lowercase letters, digits, '.', '_' and '-' (at most 64)",
        )
    _check_confined(name, path, yaml_path)
    data, positions = yamlpos.load(
        yaml_path, limit=yamlpos.MAX_ELEMENT_BYTES, what="element.yaml", follow=False
    )
    if data is not None and not isinstance(data, dict):
        raise ElementError(
            f"element '{name}': element.yaml must be a mapping of keys (description:, ...)",
            location=Location(yaml_path, 1),
            hint="write 'key: value' lines, e.g. 'description: what the element does'",
        )
    try:
        spec = ElementSpec.model_validate(data or {})
    except ValidationError as exc:
        raise _spec_error(name, exc, positions, yaml_path) from None
    element = Element(name, path, spec, origin, positions)
    _check_scripts(element)
    for option, option_spec in spec.options.items():
        if option_spec.type == "records" and not option_spec.fields:
            raise ElementError(
                f"element '{name}': option '{option}' of type records needs 'fields'",
                location=element.location("options", option),
                hint="add fields: [name, ...] (or a mapping of field to {type, format})",
            )
        try:
            check_value(
                option_spec, copy.deepcopy(option_spec.default), f"the default of '{option}'"
            )
        except formats.FormatError as exc:
            raise ElementError(
                f"element '{name}': {exc.message}",
                location=element.location("options", option, "default", *exc.path),
                hint=exc.hint,
            ) from None
    return element


def _spec_error(
    name: str, exc: ValidationError, positions: yamlpos.Positions, yaml_path: Path
) -> ElementError:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not _pydantic_step(p))
    where: Location | None = None
    for n in range(len(loc), -1, -1):
        where = positions.get(loc[:n])
        if where is not None:
            break
    where = where or Location(yaml_path)
    key = yamlpos.format_path(loc)
    message, hint = f"'{key}': {err['msg']}", "see docs/elements.md for element.yaml"
    error = err.get("ctx", {}).get("error")
    if isinstance(error, formats.FormatError):
        message, hint = f"'{key}': {error.message}", error.hint or hint
    elif err["type"] == "extra_forbidden":
        model = OptionSpec if len(loc) > 2 and loc[0] == "options" else ElementSpec
        known = list(model.model_fields)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        message = f"unknown key '{formats.shown(str(loc[-1]))[1:-1]}'"
        hint = (
            f"did you mean '{close[0]}'? " if close else ""
        ) + f"the keys allowed here are: {', '.join(known)}"
    elif err["type"] in ("list_type", "string_type", "dict_type", "bool_type", "model_type"):
        message = (
            f"'{key}' must be "
            + {
                "list_type": "a list",
                "string_type": "a string",
                "dict_type": "a mapping",
                "model_type": "a mapping",
                "bool_type": "true or false",
            }[err["type"]]
            + f", not {formats.type_name(err.get('input'))}"
        )
    elif err["type"] in ("literal_error", "enum"):
        message = f"'{key}': {formats.shown(err.get('input'))} is not allowed"
        hint = f"use one of: {err.get('ctx', {}).get('expected', '')}"
    return ElementError(
        f"element '{name}': {message}",
        location=Location(where.file, where.line, None, key or None),
        hint=hint,
    )


def _pydantic_step(part: Any) -> bool:
    """A step of pydantic's error location that names its own validators, not a key."""
    return isinstance(part, str) and part.startswith(
        ("function-", "lax-", "list[", "dict[", "nullable[", "json-or-python[")
    )


def _check_confined(name: str, path: Path, yaml_path: Path) -> None:
    """The element's folder, element.yaml, phase folders and static/ are its own: no
    symlink leads out of the folder (osbake reads, binds and copies them)."""

    def refuse(message: str, where: Path, hint: str) -> ElementError:
        return ElementError(f"element '{name}': {message}", location=Location(where), hint=hint)

    own = "an element's files must be inside its folder (copy them there; not a symlink)"
    if path.is_symlink():
        raise refuse(f"its folder is a symlink (to {formats.shown(os.readlink(path))})", path, own)
    if yaml_path.is_symlink() or not yaml_path.is_file():
        raise refuse("element.yaml is a symlink or not a regular file", yaml_path, own)
    for part in [*(p.value for p in Phase), "static"]:
        folder = path / part
        if folder.is_symlink():
            raise refuse(
                f"'{part}' is a symlink (to {formats.shown(os.readlink(folder))})", folder, own
            )
    for phase in Phase:
        folder = path / phase.value
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.is_symlink() and not link_stays_inside(
                f"{phase.value}/{entry.name}", os.readlink(entry)
            ):
                raise refuse(
                    f"the script '{phase.value}/{entry.name}' is a symlink that leads out of "
                    f"the element's folder (to {formats.shown(os.readlink(entry))})",
                    entry,
                    "put the script itself in the folder, or link to a file inside it "
                    "with a relative link",
                )
    static = path / "static"
    if static.is_dir():
        for inner, kind, target in walk_tree(static):
            if kind == "link" and not link_stays_inside(inner, target):
                raise refuse(
                    f"static/{inner} is a symlink that leads out of static/ (to "
                    f"{formats.shown(target)})",
                    static / inner,
                    "make it a relative link to a file inside static/, or create the link "
                    "in an install script (ln -s)",
                )
            if kind == "other":
                raise refuse(
                    f"static/{inner} is not a regular file, folder or symlink (a device, FIFO "
                    "or socket)",
                    static / inner,
                    "remove it; static/ holds regular files, folders and symlinks",
                )


def _check_scripts(element: Element) -> None:
    for phase in Phase:
        for script in element.scripts(phase):
            if not SCRIPT_NAME.fullmatch(script.path.name):
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
