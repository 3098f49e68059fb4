"""From an image back to a second build of it, and whether the two are the same.

`osbake rebuild IMAGE` reads the image's manifest (beside it or inside it), writes
the normalised recipe it records into a folder of its own together with what that
recipe refers to but does not contain (the files of `files:`, the recipe's own
elements), builds it again without the cache, and compares every artifact's sha256
with the manifest's. The manifest also records the mirror state (each suite's
Release digest and date): when the mirror has moved on since, the rebuild says so,
and `--mirror` points it at a mirror of that state (e.g. a snapshot archive).

The CLI runs the build (only the CLI imports osbake.build); this module prepares the
input and compares the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from osbake.diff import Diff, Side, diff
from osbake.errors import ArtifactError, UsageError
from osbake.formats import FormatError, relative_path, url
from osbake.manifest import Manifest, MirrorEntry
from osbake.recipe.files import copy_source

RECIPE_NAME = "recipe.yaml"


@dataclass
class Prepared:
    recipe: Path  # the recipe file to build
    arch: str
    variant: str | None  # the variant to build (the recipe has it, empty: see recipe_of)
    notes: list[str] = field(default_factory=list)  # what the user should know


def prepare(
    manifest: Manifest, folder: Path, *, mirror: str | None = None, source: Path | None = None
) -> Prepared:
    """Write the manifest's recipe (and what it refers to) into `folder` to build again.

    `source` is the folder the original recipe's files and elements are read from
    (default: the folder of the recipe file the manifest names, if it still exists).
    """
    recipe = recipe_of(manifest, mirror)
    notes: list[str] = []
    if mirror is not None:
        notes.append(f"packages come from {mirror} instead of the recorded mirror")
    origin = source
    if origin is None and manifest.recipe_file:
        candidate = Path(manifest.recipe_file).parent
        origin = candidate if candidate.is_dir() else None
    folder.mkdir(parents=True, exist_ok=True)
    files, own_elements = outside_recipe(manifest)
    if (files or own_elements) and origin is None:
        where = (
            f"the folder they were in ({Path(manifest.recipe_file).parent}) is gone"
            if manifest.recipe_file
            else "the manifest does not say where they were"
        )
        raise UsageError(
            f"the recipe copies files or uses elements of its own, and {where}",
            hint="give the folder of the original recipe with --source DIR",
        )
    if origin is not None:
        checked: list[str] = []
        for given in files:
            try:
                relative = relative_path(given, "a file the recipe copies")
            except FormatError as exc:
                raise ArtifactError(
                    f"the manifest's recipe: {exc.message}",
                    hint="a manifest's recipe may copy files from its own folder only",
                ) from None
            if relative not in checked:
                checked.append(relative)
        for relative in checked:
            dest = folder / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                _copy(origin, str(relative), dest)
        if own_elements and (origin / "elements").is_dir():
            _copy(origin, "elements", folder / "elements")
    path = folder / RECIPE_NAME
    path.write_text(recipe_text(recipe))
    return Prepared(path, manifest.arch, manifest.variant, notes)


def recipe_of(manifest: Manifest, mirror: str | None = None) -> dict[str, Any]:
    """The recipe that builds the manifest's image again (`mirror`: from another mirror)."""
    recipe: dict[str, Any] = dict(manifest.recipe)
    if not recipe:
        raise ArtifactError("the manifest records no recipe", hint="was the image built by osbake?")
    if mirror is not None:
        try:
            recipe["mirror"] = url(mirror, "--mirror")
        except FormatError as exc:
            raise UsageError(
                exc.message, hint=exc.hint or "e.g. --mirror http://HOST/debian"
            ) from None
    recipe.pop("variants", None)
    recipe.pop("extends", None)
    if manifest.variant:
        # The variant's changes are merged already; an empty variant of the same name
        # gives the build the image's name and variant, and so the same step keys.
        recipe["variants"] = {manifest.variant: {}}
    return recipe


def build_options(manifest: Manifest) -> list[str]:
    """The `osbake build` options that pick the manifest's image out of recipe_of()."""
    options = ["--variant", manifest.variant] if manifest.variant else []
    arches = manifest.recipe.get("arch")
    if isinstance(arches, list) and len(arches) > 1:
        options += ["--arch", manifest.arch]
    return options


def recipe_text(recipe: dict[str, Any]) -> str:
    """The recipe as the YAML file a build reads."""
    return yaml.safe_dump(recipe, sort_keys=False)


def outside_recipe(manifest: Manifest) -> tuple[list[str], list[str]]:
    """What the recipe refers to but does not contain: the `src` of its files (as
    written, unchecked) and the names of its own elements."""
    files = [
        f["src"] for f in manifest.recipe.get("files") or [] if isinstance(f, dict) and "src" in f
    ]
    own_elements = [e.name for e in manifest.elements if e.origin not in ("built-in", "")]
    return files, own_elements


def _copy(origin: Path, relative: str, dest: Path) -> None:
    """One of the recipe's files, confined to its folder as at build time."""
    try:
        copy_source(origin, relative, dest)
    except FormatError as exc:
        raise ArtifactError(
            f"the manifest's recipe names {relative!r}: {exc.message}",
            hint=exc.hint or "a manifest's recipe may copy files from its own folder only",
        ) from None


def mirror_changes(recorded: list[MirrorEntry], current: dict[str, dict[str, str]]) -> list[str]:
    """What changed on the mirror since the build (empty: the same state)."""
    changes = []
    for entry in recorded:
        state = current.get(entry.source)
        if state is None:
            changes.append(f"{entry.source}: not used now")
        elif state.get("sha256") != entry.sha256:
            changes.append(
                f"{entry.source}: Release of {entry.date or 'unknown date'} then, "
                f"{state.get('date') or 'unknown date'} now"
            )
    recorded_sources = {e.source for e in recorded}
    changes += [f"{source}: not used then" for source in current if source not in recorded_sources]
    return changes


@dataclass
class Comparison:
    identical: list[str]  # artifact formats with the same sha256
    different: list[str]
    missing: list[str]  # in the original manifest, not made by the rebuild
    changes: Diff


def compare(original: Manifest, rebuilt: Manifest) -> Comparison:
    made = {a.format: a for a in rebuilt.artifacts}
    identical, different, missing = [], [], []
    for artifact in original.artifacts:
        again = made.get(artifact.format)
        if again is None:
            missing.append(artifact.format)
        elif again.sha256 == artifact.sha256:
            identical.append(artifact.format)
        else:
            different.append(artifact.format)
    changes = diff(Side("original", original), Side("rebuilt", rebuilt))
    return Comparison(identical, different, missing, changes)
