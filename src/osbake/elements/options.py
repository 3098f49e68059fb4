"""Element options: check the recipe's values against each element's declared options,
and export them to phase scripts as environment variables.

Export rules (docs/elements.md): OSBAKE_OPT_<NAME> with the name upper-cased and
'-' turned into '_'. Strings and integers as written; booleans as 1 or 0; lists one
item per line; records one record per line, fields separated by the ASCII unit
separator (0x1F, which unlike a tab never merges with its neighbours, so empty
fields stay in place) in the declared order, list-valued fields joined with the
ASCII record separator (0x1E).
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

from osbake.elements.model import Element, OptionSpec, check_value
from osbake.errors import RecipeError
from osbake.formats import FormatError, shown
from osbake.recipe import Recipe, locate

OptionValues = dict[str, dict[str, Any]]
US = "\x1f"  # between the fields of a record
RS = "\x1e"  # between the items of a list-valued field


def resolve_options(recipe: Recipe, elements: list[Element]) -> OptionValues:
    """Every option of every element: the recipe's value or the default, checked."""
    by_name = {e.name: e for e in elements}
    for name in recipe.options:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = (
                f"did you mean '{close[0]}'? " if close else ""
            ) + f"add '{name}' to elements, or remove its options"
            raise RecipeError(
                f"options are given for element {shown(name)}, which this image does not use",
                location=locate(recipe, ("options", name)),
                hint=hint,
            )
    values: OptionValues = {}
    for element in elements:
        given = recipe.options.get(element.name, {})
        if not isinstance(given, dict):
            raise RecipeError(
                f"options for '{element.name}' must be a mapping",
                location=locate(recipe, ("options", element.name)),
                hint=f"write them as {element.name}: {{option: value}}",
            )
        declared = element.spec.options
        for key in given:
            if key not in declared:
                close = difflib.get_close_matches(key, list(declared), n=1)
                known = ", ".join(declared) or "none"
                raise RecipeError(
                    f"element '{element.name}' has no option {shown(key)}",
                    location=locate(recipe, ("options", element.name, key)),
                    hint=(f"did you mean '{close[0]}'? " if close else "")
                    + f"its options: {known} (osbake elements show {element.name})",
                )
        values[element.name] = {}
        for key, spec in declared.items():
            value = given.get(key, spec.default)
            values[element.name][key] = _check(recipe, element, key, spec, value, key in given)
    return values


def _check(
    recipe: Recipe, element: Element, key: str, spec: OptionSpec, value: Any, given: bool
) -> Any:
    where = ("options", element.name, key)
    try:
        return check_value(
            spec, copy.deepcopy(value), f"option '{key}' of element '{element.name}'"
        )
    except FormatError as exc:
        raise RecipeError(
            exc.message,
            location=locate(recipe, (*where, *exc.path))
            if given
            else element.location("options", key, "default", *exc.path),
            hint=exc.hint or spec.description or f"osbake elements show {element.name}",
        ) from None


def option_environment(values: dict[str, Any], element: Element) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in values.items():
        spec = element.spec.options[key]
        name = "OSBAKE_OPT_" + key.upper().replace("-", "_")
        env[name] = export_value(spec, value)
    return env


def export_value(spec: OptionSpec, value: Any) -> str:
    if value is None:
        return ""
    if spec.type == "boolean":
        return "1" if value else "0"
    if spec.type == "list":
        return "\n".join(value)
    if spec.type == "records":
        lines = []
        for record in value:
            fields = []
            for name in spec.field_specs():
                item = record.get(name, "")
                if isinstance(item, list):
                    item = RS.join(str(i) for i in item)
                elif isinstance(item, bool):
                    item = "1" if item else "0"
                elif item is None:
                    item = ""
                text = str(item).replace("\n", " ").replace(US, " ")
                fields.append(text)
            lines.append(US.join(fields))
        return "\n".join(lines)
    return str(value)
