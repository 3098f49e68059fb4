"""YAML loading that remembers where every key and item came from.

Errors in a recipe must name the file and line; PyYAML's composed node tree has
the marks, so the document is composed once, constructed from the nodes, and
the marks of each path (("packages", 3), ("disk", "size"), ...) are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from osbake.errors import Location, RecipeError

KeyPath = tuple[str | int, ...]
Positions = dict[KeyPath, Location]


def format_path(path: KeyPath) -> str:
    """("disk", "partitions", 0, "size") -> "disk.partitions[0].size"."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def load(path: Path, text: str | None = None) -> tuple[Any, Positions]:
    """Load one YAML document; return its data and the positions of every path."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RecipeError(
                f"the file {path} does not exist",
                hint="check the path; recipe paths are relative to the current directory",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(f"cannot read {path}: {exc}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        positions: Positions = {}
        _walk(node, (), path, positions)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or "invalid YAML"
        raise RecipeError(
            f"this is not valid YAML: {problem}",
            location=Location(path, line),
            hint="check the indentation and quoting on that line and the one before it",
        ) from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"this is not valid YAML: {exc}", location=Location(path)) from None
    finally:
        loader.dispose()
    return data, positions


def _walk(node: yaml.Node, path: KeyPath, file: Path, positions: Positions) -> None:
    positions[path] = Location(
        file, node.start_mark.line + 1, node.start_mark.column + 1, format_path(path) or None
    )
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise RecipeError(
                    f"the key '{key}' appears twice (first on line {seen[key]})",
                    location=Location(file, line, None, format_path((*path, key))),
                    hint="remove or merge one of them",
                )
            seen[key] = line
            child = (*path, key)
            _walk(value_node, child, file, positions)
            # A key's own line is more useful than its value's (which may be on the next).
            positions[child] = Location(
                file, line, key_node.start_mark.column + 1, format_path(child)
            )
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), file, positions)
