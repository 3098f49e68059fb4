"""Resolve the requested elements into an ordered set: depends, provides, conflicts.

Requests come from the recipe (with their file:line) and from osbake itself (the
distribution's element, `files` and `run` when the recipe uses them). Depends may
name an element or a virtual name that some element `provides`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from osbake.elements.catalog import Catalog
from osbake.elements.model import Element
from osbake.errors import Location, ResolveError


@dataclass(frozen=True)
class Request:
    name: str
    location: Location | None = None  # where the recipe asked for it
    reason: str = "the recipe"


def resolve(catalog: Catalog, requests: list[Request]) -> list[Element]:
    """The requested elements and everything they depend on, dependencies first."""
    chosen: dict[str, Element] = {}
    wanted_by: dict[str, str] = {}
    pending: list[tuple[str, Location | None, str]] = [
        (r.name, r.location, r.reason) for r in requests
    ]

    # Names provided by explicitly requested elements satisfy virtual depends.
    while pending:
        name, location, reason = pending.pop(0)
        if name in chosen:
            continue
        element = _find(catalog, name, location, reason, chosen)
        if element.name in chosen:
            continue
        chosen[element.name] = element
        wanted_by[element.name] = reason
        for index, dep in enumerate(element.spec.depends):
            pending.append((dep, element.location("depends", index), f"element '{element.name}'"))

    elements = list(chosen.values())
    _check_provides(elements)
    _check_conflicts(elements)
    return _order(elements)


def _find(
    catalog: Catalog, name: str, location: Location | None, reason: str, chosen: dict[str, Element]
) -> Element:
    if name in catalog:
        return catalog.get(name)
    for element in chosen.values():
        if name in element.spec.provides:
            return element
    providers = catalog.providers(name)
    if len(providers) == 1:
        return catalog.get(providers[0])
    if providers:
        raise ResolveError(
            f"'{name}' (needed by {reason}) is provided by several elements: "
            f"{', '.join(providers)}",
            location=location,
            hint="add the one you want to the recipe's elements",
        )
    close = difflib.get_close_matches(name, catalog.names(), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    hint += f"elements available: {', '.join(catalog.names())}"
    folders = ", ".join(str(f) for f, _ in catalog.search.folders)
    raise ResolveError(
        f"unknown element '{name}' (needed by {reason}); searched {folders}",
        location=location,
        hint=hint,
    )


def _check_provides(elements: list[Element]) -> None:
    owner: dict[str, Element] = {e.name: e for e in elements}
    for element in elements:
        for index, virtual in enumerate(element.spec.provides):
            other = owner.get(virtual)
            if other is not None and other is not element:
                raise ResolveError(
                    f"'{virtual}' is provided by both '{other.name}' and '{element.name}'",
                    location=element.location("provides", index),
                    hint=f"use only one of '{other.name}' and '{element.name}'",
                )
            owner[virtual] = element


def _check_conflicts(elements: list[Element]) -> None:
    names = {e.name: e for e in elements}
    for element in elements:
        for virtual in element.spec.provides:
            names.setdefault(virtual, element)
    for element in elements:
        for index, conflict in enumerate(element.spec.conflicts):
            other = names.get(conflict)
            if other is not None and other is not element:
                raise ResolveError(
                    f"element '{element.name}' conflicts with '{other.name}'"
                    + (f" (which provides '{conflict}')" if other.name != conflict else ""),
                    location=element.location("conflicts", index),
                    hint=f"remove '{other.name}' or '{element.name}' from the recipe",
                )


def _order(elements: list[Element]) -> list[Element]:
    """Dependencies before dependents; a cycle is an error that names it."""
    by_name = {e.name: e for e in elements}
    for element in elements:
        for virtual in element.spec.provides:
            by_name.setdefault(virtual, element)
    ordered: list[Element] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(element: Element, path: list[str]) -> None:
        mark = state.get(element.name)
        if mark == 2:
            return
        if mark == 1:
            cycle = [*path[path.index(element.name) :], element.name]
            raise ResolveError(
                f"elements depend on each other in a cycle: {' -> '.join(cycle)}",
                location=element.location("depends"),
                hint="remove one of these depends; elements must form a tree",
            )
        state[element.name] = 1
        for dep in element.spec.depends:
            visit(by_name[dep], [*path, element.name])
        state[element.name] = 2
        ordered.append(element)

    for element in sorted(elements, key=lambda e: e.name):
        visit(element, [])
    return ordered
