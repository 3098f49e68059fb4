"""YAML loading that is safe on hostile input and remembers where every value came from.

Errors in a recipe must name the file and line; PyYAML's composed node tree has
the marks, so the document is composed once (with libyaml when it is there),
checked, and constructed from the nodes, and the marks of each path
(("packages", 3), ("disk", "size"), ...) are kept.

Every file osbake reads from a recipe's folder (recipes, element.yaml) and every
YAML or JSON seed input goes through here, with bounds on the work it can cause:

- the file's size (read at most the limit, so /dev/zero or a huge file costs
  nothing);
- the number of values after aliases are expanded (a "billion laughs" file of a
  few hundred bytes expands to 10^9 values; it is refused after counting its few
  distinct nodes, before anything is built);
- the nesting depth, and recursive aliases (an anchor used inside itself).

All the work is linear in the size of the document.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from osbake.errors import Location, OsbakeError, RecipeError

KeyPath = tuple[str | int, ...]
Positions = dict[KeyPath, Location]

MiB = 1024 * 1024
MAX_RECIPE_BYTES = 4 * MiB
MAX_ELEMENT_BYTES = 1 * MiB
# Values in one document after aliases are expanded: far above any real recipe (one
# with 40,000 packages has 40,000), far below what hurts.
MAX_VALUES = 250_000
MAX_DEPTH = 64
YAML_HINT = "check the indentation and quoting on that line and the one before it"
# Documents up to this size are parsed again by PyYAML's parser for its clearer message.
CLEARER_LIMIT = 256 * 1024


class _Constructor(SafeConstructor):
    """PyYAML's safe constructor, with its ValueErrors (a 5,000-digit number, the 45th
    of a month) turned into YAML errors that name the line."""

    def _guarded(self, node: yaml.Node, build: Any, what: str) -> Any:
        try:
            return build(self, node)
        except (ValueError, OverflowError) as exc:
            detail = str(exc).split(":")[0]
            raise ConstructorError(
                None, None, f"{node.value[:40]!r} is not a valid {what} ({detail})", node.start_mark
            ) from None

    def construct_yaml_int(self, node: yaml.Node) -> Any:
        return self._guarded(node, SafeConstructor.construct_yaml_int, "number")

    def construct_yaml_float(self, node: yaml.Node) -> Any:
        return self._guarded(node, SafeConstructor.construct_yaml_float, "number")

    def construct_yaml_timestamp(self, node: yaml.Node) -> Any:
        return self._guarded(node, SafeConstructor.construct_yaml_timestamp, "date")


class _PlainConstructor(_Constructor):
    """For recipes and element.yaml: only what JSON has. A date stays the text it is;
    binary values, sets and ordered maps mean nothing to osbake and are refused."""

    def construct_yaml_timestamp(self, node: yaml.Node) -> Any:
        assert isinstance(node, yaml.ScalarNode)
        return self.construct_scalar(node)

    def _refuse(self, node: yaml.Node) -> Any:
        raise ConstructorError(
            None,
            None,
            f"the tag {node.tag} is not allowed here (only strings, numbers, booleans, lists "
            "and mappings are)",
            node.start_mark,
        )


for _tag, _method in (
    ("tag:yaml.org,2002:int", _Constructor.construct_yaml_int),
    ("tag:yaml.org,2002:float", _Constructor.construct_yaml_float),
    ("tag:yaml.org,2002:timestamp", _Constructor.construct_yaml_timestamp),
):
    _Constructor.add_constructor(_tag, _method)  # type: ignore[type-var]
_PlainConstructor.add_constructor(  # type: ignore[type-var]
    "tag:yaml.org,2002:timestamp", _PlainConstructor.construct_yaml_timestamp
)
for _tag in ("binary", "set", "omap", "pairs"):
    _PlainConstructor.add_constructor(  # type: ignore[type-var]
        f"tag:yaml.org,2002:{_tag}", _PlainConstructor._refuse
    )

# libyaml when it is there: the same YAML, an order of magnitude faster.
_CParser: Any = getattr(yaml.cyaml, "CParser", None) if yaml.__with_libyaml__ else None


def _loader_class(constructor: type[SafeConstructor]) -> Any:
    if _CParser is not None:

        class CLoader(_CParser, constructor, Resolver):  # type: ignore[misc, valid-type]
            def __init__(self, stream: str) -> None:
                _CParser.__init__(self, stream)
                constructor.__init__(self)
                Resolver.__init__(self)

        return CLoader

    class Loader(Reader, Scanner, Parser, Composer, constructor, Resolver):  # type: ignore[misc, valid-type]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)
            constructor.__init__(self)
            Resolver.__init__(self)

    return Loader


_PLAIN_LOADER = _loader_class(_PlainConstructor)
_LOADER = _loader_class(_Constructor)


def format_path(path: KeyPath) -> str:
    """("disk", "partitions", 0, "size") -> "disk.partitions[0].size"."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _size_text(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit % MiB == 0 else f"{limit} bytes"


def read_bounded(
    path: Path,
    limit: int,
    *,
    what: str = "recipe",
    error: type[OsbakeError] = RecipeError,
    regular: bool = True,
    follow: bool = True,
) -> bytes:
    """The bytes of a file, refusing one larger than `limit` without reading it all.

    With `regular`, only a regular file is read (a FIFO would block, a device never
    end); it is opened non-blocking, so naming a FIFO cannot hang either.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_NONBLOCK if regular else 0)
    if not follow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(
            f"the file {path} does not exist",
            hint=f"check the path; {what} paths are relative to the current directory",
        ) from None
    except IsADirectoryError:
        raise error(
            f"{path} is a directory, not a {what} file", hint=f"give the path of the {what} file"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{path} is a symlink", hint=f"give the {what} file itself") from None
        raise error(
            f"cannot read {path}: {exc.strerror}", hint="check the path and its permissions"
        ) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error(
                f"{path} is a directory, not a {what} file",
                hint=f"give the path of the {what} file",
            )
        if regular and not stat.S_ISREG(info.st_mode):
            raise error(
                f"{path} is not a regular file (a device, FIFO or socket)",
                hint=f"give a {what} file",
            )
        if regular:
            os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = os.read(fd, min(1 * MiB, limit + 1 - total))
            except OSError as exc:
                raise error(f"cannot read {path}: {exc.strerror}", hint="check the file") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise error(
                    f"the file is larger than the limit of {_size_text(limit)} for {what} files",
                    hint=f"make it smaller: {what} files may be at most {_size_text(limit)}",
                    location=Location(path),
                )
        return b"".join(chunks)
    finally:
        os.close(fd)


def decode(data: bytes, path: Path | None, *, error: type[OsbakeError] = RecipeError) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(
            f"this is not UTF-8 text (bad byte at offset {exc.start})",
            location=Location(path, line),
            hint="save the file as UTF-8",
        ) from None


def load(
    path: Path,
    text: str | None = None,
    *,
    limit: int = MAX_RECIPE_BYTES,
    what: str = "recipe",
    follow: bool = True,
) -> tuple[Any, Positions]:
    """Load one YAML document; return its data and the positions of every path."""
    if text is None:
        text = decode(read_bounded(path, limit, what=what, follow=follow), path)
    elif len(text) > limit:
        raise RecipeError(
            f"the {what} is larger than the limit of {_size_text(limit)} for {what} files",
            location=Location(path),
            hint=f"make it smaller: {what} files may be at most {_size_text(limit)}",
        )
    node, loader = _compose(text, path, RecipeError, plain=True)
    if node is None:
        return None, {}
    try:
        positions = _positions(node, path)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, text, path, RecipeError) from None
    except yaml.YAMLError as exc:
        raise RecipeError(
            f"this is not valid YAML: {exc}", location=Location(path), hint=YAML_HINT
        ) from None
    finally:
        loader.dispose()
    return data, positions


def load_data(
    text: str,
    *,
    where: Location | None = None,
    error: type[OsbakeError] = RecipeError,
    what: str = "YAML",
    subject: str = "this",
    hint: str | None = None,
    plain: bool = False,
) -> Any:
    """Load one YAML (or JSON) document with the same bounds, without positions.

    A syntax error says "<subject> is not valid <what>: <problem>", with `hint`.
    With `plain`, only what JSON has is built (for data that is written out as JSON).
    """
    path = where.file if where is not None else None
    style = (subject, hint)
    node, loader = _compose(text, path, error, where=where, what=what, style=style, plain=plain)
    if node is None:
        return None
    try:
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, text, path, error, where=where, what=what, style=style) from None
    except yaml.YAMLError as exc:
        raise error(
            f"{subject} is not valid {what}: {exc}", location=where, hint=hint or YAML_HINT
        ) from None
    finally:
        loader.dispose()


# -- the checks --------------------------------------------------------------------------------


def _compose(
    text: str,
    path: Path | None,
    error: type[OsbakeError],
    *,
    where: Location | None = None,
    what: str = "YAML",
    style: tuple[str, str | None] = ("this", None),
    plain: bool = False,
) -> tuple[yaml.Node | None, Any]:
    """The document's node graph, checked for size and depth before anything is built."""
    loader = (_PLAIN_LOADER if plain else _LOADER)(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, path, error, where)
    except yaml.MarkedYAMLError as exc:
        loader.dispose()
        raise _yaml_error(exc, text, path, error, where=where, what=what, style=style) from None
    except yaml.YAMLError as exc:
        loader.dispose()
        raise error(
            f"{style[0]} is not valid {what}: {exc}",
            location=where or Location(path),
            hint=style[1] or YAML_HINT,
        ) from None
    except RecursionError:
        loader.dispose()
        raise error(
            f"this {what} is nested too deeply",
            location=where or Location(path),
            hint=f"nest values at most {MAX_DEPTH} levels deep",
        ) from None
    except BaseException:
        loader.dispose()
        raise
    return node, loader


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(
    root: yaml.Node, path: Path | None, error: type[OsbakeError], where: Location | None
) -> None:
    """Count the values the document has once aliases are expanded, and its depth.

    Each distinct node is visited once (sizes of shared nodes are remembered), so a
    document whose aliases expand exponentially is measured in linear time.
    """
    # (size, depth) of each collection node measured so far; a scalar is (1, 1).
    measured: dict[int, tuple[int, int]] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]

    def location(node: yaml.Node) -> Location:
        if where is not None and where.file is None:
            return where
        return Location(path, node.start_mark.line + 1, node.start_mark.column + 1)

    if isinstance(root, yaml.ScalarNode):
        return
    while stack:
        node, finished = stack.pop()
        key = id(node)
        children = _children(node)
        if finished:
            on_path.discard(key)
            size, depth = 1, 1
            for child in children:
                if isinstance(child, yaml.ScalarNode):
                    size += 1
                    depth = max(depth, 2)
                else:
                    child_size, child_depth = measured[id(child)]
                    size += child_size
                    depth = max(depth, child_depth + 1)
            if size > MAX_VALUES:
                raise error(
                    f"this document expands to more than {MAX_VALUES:,} values "
                    "(aliases that refer to aliases multiply: a 'billion laughs' document?)",
                    location=location(node),
                    hint=f"a document may hold at most {MAX_VALUES:,} values once its "
                    "aliases (*name) are expanded; write the values out or use fewer aliases",
                )
            if depth > MAX_DEPTH:
                raise error(
                    f"this document is nested more than {MAX_DEPTH} levels deep",
                    location=location(node),
                    hint=f"nest values at most {MAX_DEPTH} levels deep",
                )
            measured[key] = (size, depth)
            continue
        if key in measured:
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if isinstance(child, yaml.ScalarNode):
                continue
            child_key = id(child)
            if child_key in on_path:
                raise error(
                    "an alias refers to the value that contains it (a recursive alias)",
                    location=location(child),
                    hint="an anchor (&name) cannot be used (*name) inside its own value",
                )
            if child_key not in measured:
                stack.append((child, False))


def _positions(root: yaml.Node, file: Path) -> Positions:
    """The location of every key path, and duplicate keys refused (iteratively)."""
    positions: Positions = {}
    stack: list[tuple[yaml.Node, KeyPath, int, int]] = [
        (root, (), root.start_mark.line + 1, root.start_mark.column + 1)
    ]
    while stack:
        node, path, line, column = stack.pop()
        # A key's own line is more useful than its value's (which may be on the next).
        positions[path] = Location(file, line, column)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    raise RecipeError(
                        "a key must be a plain word, not a list or a mapping",
                        location=Location(file, key_line, None, format_path(path) or None),
                        hint="write keys as 'name: value'",
                    )
                key = str(key_node.value)
                if key in seen:
                    raise RecipeError(
                        f"the key '{key}' appears twice (first on line {seen[key]})",
                        location=Location(file, key_line, None, format_path((*path, key))),
                        hint="remove or merge one of them",
                    )
                seen[key] = key_line
                stack.append((value_node, (*path, key), key_line, key_node.start_mark.column + 1))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                stack.append(
                    (item, (*path, index), item.start_mark.line + 1, item.start_mark.column + 1)
                )
    return positions


def _clearer(exc: yaml.MarkedYAMLError, text: str | None) -> yaml.MarkedYAMLError:
    """PyYAML's own parser says more than libyaml ("found character '\\t'"): for a small
    document, ask it too."""
    if _CParser is None or text is None or len(text) > CLEARER_LIMIT:
        return exc
    loader = yaml.SafeLoader(text)
    try:
        loader.get_single_node()
    except yaml.MarkedYAMLError as clearer:
        return clearer
    except (yaml.YAMLError, RecursionError):
        pass
    finally:
        loader.dispose()
    return exc


def _yaml_error(
    exc: yaml.MarkedYAMLError,
    text: str | None,
    path: Path | None,
    error: type[OsbakeError],
    *,
    where: Location | None = None,
    what: str = "YAML",
    style: tuple[str, str | None] = ("this", None),
) -> OsbakeError:
    exc = _clearer(exc, text)
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    problem = exc.problem or "invalid YAML"
    if where is not None and exc.context and exc.problem:
        problem = f"{exc.context}, {exc.problem}"
    if where is not None and where.file is None:
        location = Location(None, line, column, where.key)
    else:
        location = Location(path, line, column if where is not None else None)
    hint = style[1] or YAML_HINT
    if isinstance(exc, ConstructorError) and exc.problem_mark is not None:
        hint = "quote the value to make it a string, or write a value of the right kind"
    return error(f"{style[0]} is not valid {what}: {problem}", location=location, hint=hint)
