"""Load recipe files: YAML, `extends`, variants, and errors with locations."""

from __future__ import annotations

import contextlib
import copy
import difflib
import gc
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from osbake import formats
from osbake.arch import Arch, Firmware, from_any
from osbake.errors import Location, RecipeError
from osbake.formats import shown
from osbake.recipe import files as files_mod
from osbake.recipe import yamlpos
from osbake.recipe.model import (
    ADDITIVE_KEYS,
    MERGED_KEYS,
    TOP_ONLY_KEYS,
    Disk,
    FileSpec,
    Recipe,
    Repository,
)
from osbake.recipe.yamlpos import KeyPath, Positions

MAX_REPORTED = 5
# At most this many files in one recipe's `extends` graph.
MAX_RECIPE_FILES = 32


def load(path: str | Path, *, root: str | Path | None = None) -> Recipe:
    """Load and validate a recipe file (and every variant in it).

    With `root`, every file the recipe extends must be inside that folder (a stored
    configuration); without it, `extends` may name files anywhere. Files a recipe
    copies (`files: src`, `repositories: key`) must always be inside the folder of
    the recipe file that names them.
    """
    source = Path(path)
    confined = Path(root).resolve() if root is not None else None
    loaded: list[Path] = []
    with _collector_paused():
        raw, positions = _load_tree(source.resolve(), [], set(), loaded, confined)
        recipe = _validate(raw, positions, source)
        folders: list[Path] = []
        for file in loaded:
            if file.parent not in folders:
                folders.append(file.parent)
        recipe._folders = folders
        _index_variants(recipe)
    _check_files(recipe, recipe.files, recipe.repositories, recipe.positions, (), recipe.disk)
    check_boot_modes(recipe)
    return recipe


def check_boot_modes(recipe: Recipe) -> None:
    """Every arch of the recipe, and of each variant, boots with every firmware its
    `boot:` names (osbake.arch says which an arch has)."""
    # (variant, its arches, its firmwares, where its boot: is written)
    targets: list[tuple[str | None, list[Arch], list[Firmware], KeyPath]] = [
        (None, recipe.arch, recipe.boot, ("boot",))
    ]
    for name, overlay_raw in recipe.variants.items():
        overlay = recipe._overlays[name][0] if name in recipe._overlays else None
        if overlay is None or not {"arch", "boot"} & set(overlay_raw):
            continue
        arches = overlay.arch if "arch" in overlay_raw else recipe.arch
        boot_in_variant = "boot" in overlay_raw
        boot = overlay.boot if boot_in_variant else recipe.boot
        where: KeyPath = ("variants", name, "boot") if boot_in_variant else ("boot",)
        targets.append((name, arches, boot, where))
    for variant, arches, boot, where in targets:
        for arch in arches:
            info = arch.info
            for index, firmware in enumerate(boot):
                if firmware in info.firmwares:
                    continue
                within = f" (variant '{variant}')" if variant else ""
                hint = _boot_hint(arch, firmware, len(arches) > 1)
                if variant and where == ("boot",):
                    hint = (
                        f"{arch} boots with {', '.join(info.firmwares) or 'none'}: give "
                        f"variant '{variant}' a 'boot:' of its own"
                    )
                raise RecipeError(
                    f"{arch} does not boot with {firmware}{within}: {_why(arch, firmware)}",
                    location=_locate(recipe.positions, (*where, index), recipe.source),
                    hint=hint,
                )


def _why(arch: Arch, firmware: Firmware) -> str:
    info = arch.info
    if firmware == Firmware.UEFI_SECUREBOOT and info.grub_efi:
        return f"Debian ships no signed shim and GRUB for {arch}"
    if firmware == Firmware.BIOS and info.grub_efi:
        return f"{arch} machines have no BIOS"
    if firmware == Firmware.EXTLINUX:
        return f"osbake boots {arch} with GRUB, not with U-Boot's extlinux.conf"
    if not info.firmwares:
        return f"osbake installs no bootloader for {arch}"
    return f"GRUB has no {firmware} platform for {arch}"


def _boot_hint(arch: Arch, firmware: Firmware, several: bool) -> str:
    have = arch.info.firmwares
    if not have:
        hint = "remove 'boot:' (an image without a bootloader: tar, oci)"
    else:
        hint = f"{arch} boots with {', '.join(have)}: remove {firmware} from 'boot:'"
        if firmware == Firmware.UEFI_SECUREBOOT and Firmware.UEFI in have:
            hint += " (uefi boots without Secure Boot)"
    if several:
        hint += f"; or build {arch} in a variant of its own with its own 'arch:' and 'boot:'"
    return hint


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Loading makes many objects and no reference cycles: the cyclic garbage collector
    would only walk the growing heap again and again (a third of the time for 40,000
    packages)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def select_variant(recipe: Recipe, name: str | None) -> Recipe:
    """The recipe with variant `name` merged onto it (the recipe itself for None).

    The variant's own keys were validated when the recipe was loaded, so merging
    combines validated values: the work is proportional to the variant, not to the
    base recipe.
    """
    if name is None:
        return recipe
    if recipe.variant is not None:
        raise RecipeError(
            f"this recipe is already variant '{recipe.variant}'",
            hint="select variants of the recipe as loaded",
        )
    if name not in recipe.variants:
        known = ", ".join(sorted(recipe.variants)) or "none"
        raise RecipeError(
            f"the recipe has no variant '{shown(name)}'",
            location=Location(recipe.source),
            hint=f"variants defined: {known}" + _did_you_mean(name, list(recipe.variants)),
        )
    overlay_raw = recipe.variants[name]
    overlay, overlay_positions = recipe._overlays[name]
    base_groups = recipe._groups
    over_groups = _group(overlay_positions)
    updates: dict[str, Any] = {}
    groups: dict[str, Positions] = dict(base_groups)
    for key in overlay_raw:
        value = getattr(overlay, key)
        if key in ADDITIVE_KEYS:
            removable = key in REMOVABLE_KEYS
            removed = (
                {i[1:] for i in value if isinstance(i, str) and i.startswith("-")}
                if removable
                else set()
            )
            kept = [i for i in getattr(recipe, key) if not (isinstance(i, str) and i in removed)]
            added = [i for i in value if not (removable and isinstance(i, str) and i[:1] == "-")]
            updates[key] = _unique(kept + added) if removable else kept + added
            group = dict(base_groups.get(key, {}))
            offset = len(kept)
            for path, loc in over_groups.get(key, {}).items():
                if len(path) > 1 and isinstance(path[1], int):
                    group[(key, path[1] + offset, *path[2:])] = loc
                elif len(path) == 1:
                    group[path] = loc
            groups[key] = group
        elif key in MERGED_KEYS:
            merged = dict(getattr(recipe, key))
            for sub, subvalue in value.items():
                if isinstance(merged.get(sub), dict) and isinstance(subvalue, dict):
                    merged[sub] = {**merged[sub], **subvalue}
                else:
                    merged[sub] = subvalue
            updates[key] = merged
            groups[key] = {**base_groups.get(key, {}), **over_groups.get(key, {})}
        else:
            updates[key] = value
            groups[key] = over_groups.get(key, {})
    # Options of elements the variant removes go with them (unless it sets them anew).
    dropped = {i[1:] for i in overlay.elements if i.startswith("-")}
    given = overlay_raw.get("options") or {}
    options = updates.get("options", recipe.options)
    if any(e in options for e in dropped - set(given)):
        updates["options"] = {k: v for k, v in options.items() if k not in dropped - set(given)}
    groups.pop("variants", None)
    variant = recipe.model_copy(update={**updates, "variants": {}})
    positions: Positions = {(): recipe.positions[()]} if () in recipe.positions else {}
    for group in groups.values():
        positions.update(group)
    variant._positions = positions
    variant._groups = groups
    variant._overlays = {}
    variant._variant = name
    return variant


def _unique(items: list[Any]) -> list[Any]:
    """The items without repeats, the first of each kept (in linear time)."""
    seen: set[Any] = set()
    kept: list[Any] = []
    for item in items:
        try:
            if item in seen:
                continue
            seen.add(item)
        except TypeError:  # an unhashable item: the model refuses it
            pass
        kept.append(item)
    return kept


# -- loading and merging ---------------------------------------------------------------------


def _load_tree(
    path: Path,
    chain: list[tuple[Path, Location]],
    merged_files: set[Path],
    loaded: list[Path],
    root: Path | None,
) -> tuple[dict[str, Any], Positions]:
    """Load a recipe and, depth first, what it extends; each file is merged once.

    `chain` holds the files that extend this one (and where they do), to name a cycle.
    """
    merged_files.add(path)
    loaded.append(path)
    if len(loaded) > MAX_RECIPE_FILES:
        raise RecipeError(
            f"the recipe extends more than {MAX_RECIPE_FILES} files",
            location=chain[-1][1] if chain else Location(path),
            hint=f"a recipe and the files it extends may be at most {MAX_RECIPE_FILES} files",
        )
    data, positions = yamlpos.load(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(
            "a recipe must be a YAML mapping of keys (name:, release:, ...)",
            location=Location(path, 1),
            hint="write the recipe as 'key: value' lines, starting with e.g. 'name: my-image'",
        )
    _check_removals(data, positions)
    parents = data.get("extends")
    if parents is None:
        _apply_removals(data)  # "-name" at the bottom of a chain has nothing to remove
        return data, positions
    listed = isinstance(parents, list)
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise RecipeError(
            "'extends' must be a file name or a list of file names",
            location=_locate(positions, ("extends",)),
            hint="e.g. extends: base.yaml, or extends: [base.yaml, extra.yaml]",
        )
    merged: dict[str, Any] = {}
    merged_positions: Positions = {}
    for index, parent in enumerate(parents):
        where = _locate(positions, ("extends", index) if listed else ("extends",))
        try:
            formats.line(parent, "extends")
        except formats.FormatError as exc:
            raise RecipeError(exc.message, location=where, hint=exc.hint) from None
        parent_path = (path.parent / parent).resolve()
        ancestors = [*(p for p, _ in chain), path]
        if parent_path in ancestors:
            cycle = " -> ".join(
                str(p) for p in [*ancestors[ancestors.index(parent_path) :], parent_path]
            )
            raise RecipeError(
                f"recipes extend each other in a cycle: {cycle}"
                if parent_path != path
                else f"the recipe extends itself ({parent})",
                location=where,
                hint="remove this 'extends' entry: a recipe cannot build on itself",
            )
        if root is not None and not parent_path.is_relative_to(root):
            raise RecipeError(
                f"the recipe it extends, {shown(parent)}, is outside the configuration "
                f"({parent_path})",
                location=where,
                hint="a stored configuration may only extend files inside it",
            )
        if parent_path.exists() and not parent_path.is_file():
            raise RecipeError(
                f"the recipe it extends, {shown(parent)}, is not a regular file ({parent_path})",
                location=where,
                hint="'extends' names recipe files",
            )
        if not parent_path.is_file():
            raise RecipeError(
                f"the recipe it extends, {shown(parent)}, does not exist ({parent_path})",
                location=where,
                hint="paths in 'extends' are relative to the recipe file",
            )
        if parent_path in merged_files:
            continue  # already merged through another parent (a diamond)
        parent_data, parent_positions = _load_tree(
            parent_path, [*chain, (path, where)], merged_files, loaded, root
        )
        parent_data.pop("extends", None)
        if not merged:
            merged, merged_positions = parent_data, parent_positions
        else:
            merged, merged_positions = _merge(
                merged, merged_positions, parent_data, parent_positions
            )
    own = {k: v for k, v in data.items() if k != "extends"}
    result, result_positions = _merge(merged, merged_positions, own, positions)
    result["extends"] = data["extends"]
    return result, result_positions


def _group(positions: Positions) -> dict[str, Positions]:
    """Positions by their top-level key (one pass)."""
    groups: dict[str, Positions] = {}
    for path, loc in positions.items():
        if path:
            groups.setdefault(str(path[0]), {})[path] = loc
    return groups


def _merge(
    base: dict[str, Any],
    base_pos: Positions,
    overlay: dict[str, Any],
    overlay_pos: Positions,
) -> tuple[dict[str, Any], Positions]:
    """Overlay `overlay` onto `base` by the documented rules (see docs/recipe.md)."""
    result = copy.deepcopy(base)
    groups = _group(base_pos)
    over_groups = _group(overlay_pos)
    for key, value in overlay.items():
        old = result.get(key)
        over = over_groups.get(str(key), {})
        if key in ADDITIVE_KEYS and isinstance(old, list) and isinstance(value, list):
            # "-name" in the overlay removes name from what it inherits, nothing else.
            removed = (
                {i[1:] for i in value if isinstance(i, str) and i.startswith("-")}
                if key in REMOVABLE_KEYS
                else set()
            )
            old = [i for i in old if not (isinstance(i, str) and i in removed)]
            offset = len(old)
            result[key] = old + [copy.deepcopy(i) for i in value if _kept(key, i)]
            group = groups.setdefault(str(key), {})
            for path, loc in over.items():
                if len(path) > 1 and isinstance(path[1], int):
                    group[(key, path[1] + offset, *path[2:])] = loc
        elif key in MERGED_KEYS and isinstance(old, dict) and isinstance(value, dict):
            merged = copy.deepcopy(old)
            for sub, subvalue in value.items():
                if isinstance(merged.get(sub), dict) and isinstance(subvalue, dict):
                    merged[sub] = {**merged[sub], **subvalue}
                else:
                    merged[sub] = copy.deepcopy(subvalue)
            result[key] = merged
            groups.setdefault(str(key), {}).update(over)
        else:
            result[key] = copy.deepcopy(value)
            groups[str(key)] = dict(over)
        if (key,) in overlay_pos:
            groups.setdefault(str(key), {})[(key,)] = overlay_pos[(key,)]
    positions: Positions = {(): base_pos[()]} if () in base_pos else {}
    for group in groups.values():
        positions.update(group)
    return result, positions


REMOVABLE_KEYS = ("elements", "packages")


def _kept(key: str, item: Any) -> bool:
    return not (key in REMOVABLE_KEYS and isinstance(item, str) and item.startswith("-"))


def _apply_removals(data: dict[str, Any]) -> None:
    """Drop "-name" entries and the names they remove from elements and packages."""
    for key in ("elements", "packages"):
        items = data.get(key)
        if not isinstance(items, list):
            continue
        removed = {i[1:] for i in items if isinstance(i, str) and i.startswith("-")}
        data[key] = _unique(
            [i for i in items if not (isinstance(i, str) and (i.startswith("-") or i in removed))]
        )


REMOVAL_CHECKS = {
    "elements": ("element name", formats.name),
    "packages": ("package", formats.package_spec),
}


def _check_removals(data: dict[str, Any], positions: Positions) -> None:
    """ "-name" entries are dropped before the model sees them: check their names here."""
    for key, (what, check) in REMOVAL_CHECKS.items():
        items = data.get(key)
        for index, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, str) and item.startswith("-"):
                try:
                    check(item[1:], what)
                except formats.FormatError as exc:
                    raise RecipeError(
                        exc.message,
                        location=_locate(positions, (key, index)),
                        hint=f"'-name' removes name; {exc.hint}",
                    ) from None


def _index_variants(recipe: Recipe) -> None:
    """Check every variant's own keys (types and formats) and keep them, validated."""
    groups = _group(recipe.positions)
    by_variant: dict[str, Positions] = {}
    for path, loc in groups.pop("variants", {}).items():
        if len(path) > 2:
            by_variant.setdefault(str(path[1]), {})[path[2:]] = loc
        elif len(path) == 2:
            by_variant.setdefault(str(path[1]), {})[()] = loc
    recipe._groups = groups
    overlays: dict[str, tuple[Recipe, Positions]] = {}
    for name, overlay in recipe.variants.items():
        where: KeyPath = ("variants", name)
        if not isinstance(overlay, dict):
            raise RecipeError(
                "a variant must be a mapping of recipe keys",
                location=_locate(recipe.positions, where),
                hint="e.g. variants: {ec2: {elements: [ec2], outputs: [raw]}}",
            )
        for key in overlay:
            if key in TOP_ONLY_KEYS:
                raise RecipeError(
                    f"a variant cannot set '{key}'",
                    location=_locate(recipe.positions, (*where, key)),
                    hint=f"move '{key}' to the top of the recipe",
                )
        positions = by_variant.get(name, {})
        data = {**copy.deepcopy(overlay), "name": recipe.name}
        try:
            validated = Recipe.model_validate(data)
        except ValidationError as exc:
            raise _recipe_error(exc, positions, recipe.source or Path("recipe"), where) from None
        validated._source = recipe.source
        _check_files(
            recipe, validated.files, validated.repositories, positions, where, validated.disk
        )
        overlays[name] = (validated, positions)
    recipe._overlays = overlays


# -- validation ------------------------------------------------------------------------------


def _validate(
    raw: dict[str, Any], positions: Positions, source: Path, prefix: KeyPath = ()
) -> Recipe:
    data = copy.deepcopy(raw)
    _apply_removals(data)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise _recipe_error(exc, positions, source, prefix) from None
    recipe._source = source
    recipe._positions = positions
    return recipe


def _recipe_error(
    exc: ValidationError, positions: Positions, source: Path, prefix: KeyPath
) -> RecipeError:
    problems: list[tuple[Location, str, str | None]] = []
    for err in exc.errors():
        # Without pydantic's own steps (its validators' names, union members).
        loc: KeyPath = tuple(p for p in err["loc"] if not _pydantic_step(p))
        location = _locate(positions, loc, source)
        if prefix:
            location = Location(
                location.file,
                location.line,
                location.column,
                yamlpos.format_path((*prefix, *loc)) or None,
            )
        message, hint = _describe(err, loc)
        if prefix:
            message = f"in variant '{prefix[-1]}': {message}"
        problems.append((location, message, hint))
    location, message, hint = problems[0]
    if len(problems) > 1:
        others = "\n".join(f"  also {loc}: {msg}" for loc, msg, _ in problems[1:MAX_REPORTED])
        more = len(problems) - MAX_REPORTED
        if more > 0:
            others += f"\n  ... and {more} more"
        message = f"{message}\n{others}"
    return RecipeError(message, location=location, hint=hint)


def _pydantic_step(part: Any) -> bool:
    return isinstance(part, str) and part.startswith(
        ("function-", "lax-", "list[", "dict[", "nullable[", "json-or-python[")
    )


def _locate(positions: Positions, loc: KeyPath, source: Path | None = None) -> Location:
    """The location of `loc`, or of its nearest parent that has one."""
    for n in range(len(loc), -1, -1):
        found = positions.get(loc[:n])
        if found is not None:
            return Location(found.file, found.line, found.column, yamlpos.format_path(loc) or None)
    return Location(source, None, None, yamlpos.format_path(loc) or None)


def _describe(err: Any, loc: KeyPath) -> tuple[str, str | None]:
    kind = err["type"]
    key = yamlpos.format_path(loc) if loc else "recipe"
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = _known_keys(loc[:-1])
        hint = "remove it" + _did_you_mean(key, known)
        if not _did_you_mean(key, known) and known:
            hint += f"; the keys allowed here are: {', '.join(known)}"
        return f"unknown key '{key}'", hint
    if kind == "missing":
        return f"the key '{key}' is required here", f"add '{key}:' with a value"
    if kind in ("enum", "literal_error"):
        expected = err.get("ctx", {}).get("expected", "")
        given = err.get("input")
        if loc[:1] == ("arch",):
            named = from_any(given) if isinstance(given, str) else None
            if named is not None:
                return (
                    f"{shown(given)} is not a Debian architecture name",
                    f"write {named} (Debian's name for it); recipes use Debian's names: {expected}",
                )
            return (
                f"osbake does not know the architecture {shown(given)}",
                f"use one of: {expected} (adding one is an entry in osbake/arch.py)",
            )
        return (f"{shown(given)} is not allowed for '{key}'", f"use one of: {expected}")
    if kind == "string_pattern_mismatch":
        return (
            f"{shown(err.get('input'))} is not a valid value for '{key}'",
            "use lowercase letters, digits, '.', '_' and '-'",
        )
    if kind == "too_long":
        limit = err.get("ctx", {}).get("max_length")
        return f"'{key}' has more than {limit} entries", f"give at most {limit}"
    if kind in (
        "list_type",
        "dict_type",
        "string_type",
        "int_type",
        "bool_type",
        "int_parsing",
        "bool_parsing",
        "model_type",
    ):
        wanted = {
            "list_type": "a list",
            "dict_type": "a mapping",
            "string_type": "a string",
            "int_type": "a whole number",
            "int_parsing": "a whole number",
            "bool_type": "true or false",
            "bool_parsing": "true or false",
            "model_type": "a mapping",
        }[kind]
        got = type(err.get("input")).__name__
        got = {
            "str": "a string",
            "int": "a number",
            "list": "a list",
            "dict": "a mapping",
            "NoneType": "empty",
            "bool": "a boolean",
            "float": "a number",
        }.get(got, got)
        hint = f"write {key} as {wanted}"
        if kind == "list_type":
            hint = f"write {key} as a list, e.g. {key}: [{_example(err.get('input'))}]"
        return f"'{key}' must be {wanted}, not {got}", hint
    if kind == "too_short":
        return f"'{key}' must not be empty", f"give at least one value for '{key}'"
    if kind == "value_error":
        error = err.get("ctx", {}).get("error")
        if isinstance(error, formats.FormatError):
            return error.message, error.hint
        message = str(err.get("msg", "")).removeprefix("Value error, ")
        return f"'{key}' {message}", None
    return f"'{key}': {err.get('msg')}", None


def _example(value: Any) -> str:
    return str(value) if isinstance(value, str | int) else "..."


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _known_keys(loc: KeyPath) -> list[str]:
    """The keys a model accepts at `loc` (for suggestions)."""
    model: Any = Recipe
    for part in loc:
        model = _descend(model, part)
        if model is None:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _descend(annotation: Any, part: str | int) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return _unwrap(field.annotation) if field else None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is list and args:
        return _unwrap(args[0])
    if origin is dict and len(args) == 2:
        return _unwrap(args[1])
    return None


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _unwrap(arg)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return annotation


# -- checks that need the file system ----------------------------------------------------------


def _check_files(
    recipe: Recipe,
    files: list[FileSpec],
    repositories: list[Repository],
    positions: Positions,
    prefix: KeyPath,
    disk: Disk | None = None,
) -> None:
    """Every file the recipe copies is inside the folder of the recipe file that names it."""
    items: list[tuple[KeyPath, str, str]] = [
        (("files", i, "src"), spec.src, "src") for i, spec in enumerate(files)
    ]
    items += [(where, key_file, "key_file") for where, key_file in luks_key_files(disk)]
    items += [
        (("repositories", i, "key"), repo.key, "key")
        for i, repo in enumerate(repositories)
        if repo.key is not None
    ]
    for where, value, what in items:
        location = _locate(positions, where, recipe.source)
        folder = location.file.parent if location.file is not None else recipe.base_dir
        if prefix:
            location = Location(
                location.file,
                location.line,
                location.column,
                yamlpos.format_path((*prefix, *where)),
            )
        try:
            path = files_mod.check_source(folder, value, what=what)
        except files_mod.MissingSource as exc:
            hint = "paths in 'files' are relative to the recipe file that names them"
            if what == "key":
                hint = "paths are relative to the recipe file that names them"
            raise RecipeError(exc.message, location=location, hint=hint) from None
        except formats.FormatError as exc:
            raise RecipeError(exc.message, location=location, hint=exc.hint) from None
        if what == "key_file" and not path.is_file():
            raise RecipeError(
                f"the LUKS key file {shown(value)} is not a file ({path})",
                location=location,
                hint="give a file holding the key or passphrase",
            )
        if what == "key" and not path.is_file():
            raise RecipeError(
                f"the key file {shown(value)} is not a file ({path})",
                location=location,
                hint="give the repository's signing key (binary or ASCII-armored)",
            )


def luks_key_files(disk: Disk | None) -> list[tuple[KeyPath, str]]:
    """(where in the recipe, path) of every LUKS key file the layout names."""
    if disk is None:
        return []
    found: list[tuple[KeyPath, str]] = [
        (("disk", "partitions", i, "luks", "key_file"), p.luks.key_file)
        for i, p in enumerate(disk.partitions)
        if p.luks is not None
    ]
    found += [
        (("disk", "volume_groups", g, "volumes", v, "luks", "key_file"), lv.luks.key_file)
        for g, group in enumerate(disk.volume_groups)
        for v, lv in enumerate(group.volumes)
        if lv.luks is not None
    ]
    return found


def source_folder(recipe: Recipe, where: KeyPath) -> Path:
    """The folder of the recipe file in which the value at `where` was written."""
    loc = _locate(recipe.positions, where, recipe.source)
    folder = loc.file.parent if loc.file is not None else recipe.base_dir
    return folder.resolve()


def resolve_path(recipe: Recipe, where: KeyPath, value: str) -> Path:
    """A path written in the recipe, resolved against the file it was written in.

    Files a recipe names are checked at load to stay inside that file's folder
    (osbake.recipe.files); read or copy them with osbake.recipe.files, which does not
    follow symlinks, rather than through this path.
    """
    return source_folder(recipe, where) / value


def locate(recipe: Recipe, where: KeyPath) -> Location:
    """The file:line of a key path in the recipe (for errors raised after loading)."""
    return _locate(recipe.positions, where, recipe.source)
