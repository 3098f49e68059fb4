"""Load recipe files: YAML, `extends`, variants, and errors with locations."""

from __future__ import annotations

import copy
import difflib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from osbake.errors import Location, RecipeError
from osbake.recipe import yamlpos
from osbake.recipe.model import ADDITIVE_KEYS, MERGED_KEYS, TOP_ONLY_KEYS, Recipe
from osbake.recipe.yamlpos import KeyPath, Positions

MAX_REPORTED = 5


def load(path: str | Path) -> Recipe:
    """Load and validate a recipe file (and every variant in it)."""
    source = Path(path)
    raw, positions = _load_tree(source.resolve(), [])
    recipe = _validate(raw, positions, source)
    for name in recipe.variants:
        select_variant(recipe, name)
    _check_files(recipe)
    return recipe


def select_variant(recipe: Recipe, name: str | None) -> Recipe:
    """The recipe with variant `name` merged onto it (the recipe itself for None)."""
    if name is None:
        return recipe
    if recipe.variant is not None:
        raise RecipeError(f"this recipe is already variant '{recipe.variant}'")
    if name not in recipe.variants:
        known = ", ".join(sorted(recipe.variants)) or "none"
        raise RecipeError(
            f"the recipe has no variant '{name}'",
            location=Location(recipe.source),
            hint=f"variants defined: {known}" + _did_you_mean(name, list(recipe.variants)),
        )
    overlay = recipe.variants[name]
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
    base = recipe.model_dump(mode="json", exclude_defaults=False)
    base_raw = {k: v for k, v in base.items() if k != "variants"}
    positions = dict(recipe.positions)
    merged, merged_positions = _merge(
        base_raw, positions, overlay, _sub_positions(recipe.positions, where), ()
    )
    # Options of elements the variant removes go with them (unless it sets them anew).
    dropped = {
        i[1:] for i in overlay.get("elements", []) if isinstance(i, str) and i.startswith("-")
    }
    overlay_options = overlay.get("options") or {}
    if isinstance(merged.get("options"), dict):
        for element in dropped - set(overlay_options):
            merged["options"].pop(element, None)
    merged["variants"] = {}
    variant = _validate(merged, merged_positions, recipe.source or Path("recipe"), prefix=where)
    variant._variant = name
    return variant


# -- loading and merging ---------------------------------------------------------------------


def _load_tree(
    path: Path, chain: list[Path], merged_files: set[Path] | None = None
) -> tuple[dict[str, Any], Positions]:
    """Load a recipe and, depth first, what it extends; each file is merged once."""
    merged_files = set() if merged_files is None else merged_files
    merged_files.add(path)
    if path in chain:
        cycle = " -> ".join(str(p) for p in [*chain, path])
        raise RecipeError(
            f"recipes extend each other in a cycle: {cycle}",
            location=Location(chain[-1]),
            hint="remove one of the 'extends' entries",
        )
    data, positions = yamlpos.load(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(
            "a recipe must be a YAML mapping of keys (name:, release:, ...)",
            location=Location(path, 1),
        )
    parents = data.get("extends")
    if parents is None:
        _apply_removals(data)  # "-name" at the bottom of a chain has nothing to remove
        return data, positions
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise RecipeError(
            "'extends' must be a file name or a list of file names",
            location=_locate(positions, ("extends",)),
        )
    merged: dict[str, Any] = {}
    merged_positions: Positions = {}
    for index, parent in enumerate(parents):
        parent_path = (path.parent / parent).resolve()
        if not parent_path.is_file():
            raise RecipeError(
                f"the recipe it extends, {parent}, does not exist ({parent_path})",
                location=_locate(
                    positions,
                    ("extends", index)
                    if len(parents) > 1 or isinstance(data["extends"], list)
                    else ("extends",),
                ),
                hint="paths in 'extends' are relative to the recipe file",
            )
        if parent_path in merged_files and parent_path not in chain:
            continue  # already merged through another parent (a diamond)
        parent_data, parent_positions = _load_tree(parent_path, [*chain, path], merged_files)
        parent_data.pop("extends", None)
        if not merged:
            merged, merged_positions = parent_data, parent_positions
        else:
            merged, merged_positions = _merge(
                merged, merged_positions, parent_data, parent_positions, ()
            )
    own = {k: v for k, v in data.items() if k != "extends"}
    result, result_positions = _merge(merged, merged_positions, own, positions, ())
    result["extends"] = data["extends"]
    return result, result_positions


def _sub_positions(positions: Positions, prefix: KeyPath) -> Positions:
    n = len(prefix)
    return {path[n:]: loc for path, loc in positions.items() if path[:n] == prefix}


def _merge(
    base: dict[str, Any],
    base_pos: Positions,
    overlay: dict[str, Any],
    overlay_pos: Positions,
    prefix: KeyPath,
) -> tuple[dict[str, Any], Positions]:
    """Overlay `overlay` onto `base` by the documented rules (see docs/recipe.md)."""
    result = copy.deepcopy(base)
    positions = dict(base_pos)
    for key, value in overlay.items():
        here: KeyPath = (*prefix, key)
        old = result.get(key)
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
            for path, loc in overlay_pos.items():
                if path[:1] == (key,) and len(path) > 1 and isinstance(path[1], int):
                    positions[(*prefix, key, path[1] + offset, *path[2:])] = loc
        elif key in MERGED_KEYS and isinstance(old, dict) and isinstance(value, dict):
            merged = copy.deepcopy(old)
            for sub, subvalue in value.items():
                if isinstance(merged.get(sub), dict) and isinstance(subvalue, dict):
                    merged[sub] = {**merged[sub], **subvalue}
                else:
                    merged[sub] = copy.deepcopy(subvalue)
            result[key] = merged
            for path, loc in overlay_pos.items():
                if path[:1] == (key,):
                    positions[(*prefix, *path)] = loc
        else:
            result[key] = copy.deepcopy(value)
            for path in [p for p in positions if p[: len(here)] == here]:
                del positions[path]
            for path, loc in overlay_pos.items():
                if path[:1] == (key,):
                    positions[(*prefix, *path)] = loc
        if (key,) in overlay_pos:
            positions[here] = overlay_pos[(key,)]
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
        kept: list[Any] = []
        for item in items:
            if isinstance(item, str) and (item.startswith("-") or item in removed):
                continue
            if item not in kept:
                kept.append(item)
        data[key] = kept


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
        loc: KeyPath = tuple(err["loc"])
        if (
            err["type"] in ("literal_error", "enum")
            and loc
            and isinstance(loc[-1], str)
            and loc[-1].startswith(("function-", "lax-"))
        ):
            loc = loc[:-1]
        location = _locate(positions, loc, source)
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
        return (f"'{err.get('input')}' is not allowed for '{key}'", f"use one of: {expected}")
    if kind == "string_pattern_mismatch":
        return (
            f"'{err.get('input')}' is not a valid value for '{key}'",
            "use lowercase letters, digits, '.', '_' and '-'",
        )
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


def _check_files(recipe: Recipe) -> None:
    for index, spec in enumerate(recipe.files):
        path = resolve_path(recipe, ("files", index, "src"), spec.src)
        if not path.exists():
            raise RecipeError(
                f"the file '{spec.src}' does not exist ({path})",
                location=_locate(recipe.positions, ("files", index, "src"), recipe.source),
                hint="paths in 'files' are relative to the recipe file that names them",
            )
    for index, repo in enumerate(recipe.repositories):
        if repo.key is not None:
            path = resolve_path(recipe, ("repositories", index, "key"), repo.key)
            if not path.is_file():
                raise RecipeError(
                    f"the key file '{repo.key}' does not exist ({path})",
                    location=_locate(
                        recipe.positions, ("repositories", index, "key"), recipe.source
                    ),
                    hint="paths are relative to the recipe file that names them",
                )


def resolve_path(recipe: Recipe, where: KeyPath, value: str) -> Path:
    """A path written in the recipe, resolved against the file it was written in."""
    path = Path(value)
    if path.is_absolute():
        return path
    loc = _locate(recipe.positions, where, recipe.source)
    base = loc.file.parent if loc.file is not None else recipe.base_dir
    return (base / path).resolve()


def locate(recipe: Recipe, where: KeyPath) -> Location:
    """The file:line of a key path in the recipe (for errors raised after loading)."""
    return _locate(recipe.positions, where, recipe.source)
