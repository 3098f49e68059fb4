from __future__ import annotations

from pathlib import Path

import pytest

from osbake.elements import Catalog, Request, SearchPath, resolve
from osbake.elements.options import option_environment, resolve_options
from osbake.errors import RecipeError
from osbake.recipe import load
from tests.unit.elements.test_resolver import element

ELEMENT = """\
options:
  users:
    type: records
    fields: [name, groups, sudo]
    default: []
  lock:
    type: boolean
    default: true
  shell:
    type: string
    default: /bin/sh
    choices: [/bin/sh, /bin/bash]
  extra:
    type: list
    default: []
"""


def setup(tmp_path: Path, options: str) -> tuple[object, object]:
    element(tmp_path / "elements", "acct", ELEMENT)
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(f"name: d\nelements: [acct]\noptions:\n{options}")
    recipe = load(recipe_path)
    cat = Catalog(SearchPath([(tmp_path / "elements", "recipe")]))
    elements = resolve(cat, [Request("acct")])
    return recipe, elements


def test_values_and_export(tmp_path: Path) -> None:
    recipe, elements = setup(
        tmp_path,
        """\
  acct:
    users:
      - {name: ana, groups: [adm, sudo], sudo: true}
      - {name: bo}
    lock: false
    extra: [a, b]
""",
    )
    values = resolve_options(recipe, elements)  # type: ignore[arg-type]
    env = option_environment(values["acct"], elements[0])  # type: ignore[index]
    assert env["OSBAKE_OPT_USERS"] == "ana\x1fadm\x1esudo\x1f1\nbo\x1f\x1f"
    assert env["OSBAKE_OPT_LOCK"] == "0"
    assert env["OSBAKE_OPT_SHELL"] == "/bin/sh"
    assert env["OSBAKE_OPT_EXTRA"] == "a\nb"


def test_unknown_option_suggests(tmp_path: Path) -> None:
    recipe, elements = setup(tmp_path, "  acct:\n    lok: true\n")
    with pytest.raises(RecipeError) as info:
        resolve_options(recipe, elements)  # type: ignore[arg-type]
    assert "no option 'lok'" in info.value.message
    assert "lock" in (info.value.hint or "")
    assert info.value.location is not None and info.value.location.line == 5


def test_wrong_type_and_choice(tmp_path: Path) -> None:
    recipe, elements = setup(tmp_path, "  acct:\n    shell: /bin/zsh\n")
    with pytest.raises(RecipeError) as info:
        resolve_options(recipe, elements)  # type: ignore[arg-type]
    assert "one of" in info.value.message


def test_options_for_an_unused_element(tmp_path: Path) -> None:
    recipe, elements = setup(tmp_path, "  acct: {}\n  other: {x: 1}\n")
    with pytest.raises(RecipeError) as info:
        resolve_options(recipe, elements)  # type: ignore[arg-type]
    assert "does not use" in info.value.message
