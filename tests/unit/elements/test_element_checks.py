"""element.yaml is typed and an element's files stay in its folder; option values have formats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from osbake.elements import Catalog, Request, SearchPath, resolve
from osbake.elements.model import check_value, load_element
from osbake.elements.options import option_environment, resolve_options
from osbake.errors import ElementError, RecipeError
from osbake.formats import FormatError
from osbake.recipe import load
from tests.unit.elements.test_resolver import element


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("depends: [../x]\n", "is not a valid element name"),
        ("packages: ['curl;id']\n", "is not a valid package"),
        ("environment: {PATH: /tmp}\n", "may not set PATH"),
        ("environment: {LD_PRELOAD: /x.so}\n", "may not set LD_PRELOAD"),
        ("environment: {OSBAKE_ARCH: x}\n", "may not set OSBAKE_ARCH"),
        ("environment: {'A B': x}\n", "is not a valid variable name"),
        ('environment: {FOO: "a\\nb"}\n', "control character"),
        ("cmdline: ['quiet splash']\n", "is not one kernel command-line argument"),
        ("cmdline: ['init=$x']\n", "is not a valid word"),
        ("cmdline: ['console=${OSBAKE_HOME}']\n", "which osbake does not fill in"),
        ("cmdline: ['console=${OSBAKE_CONSOLE'] \n", "is not a valid word"),
        ("cmdline: ['a=${OSBAKE_CONSOLE};id']\n", "is not a valid word"),
        ("options:\n  'x y': {}\n", "is not a valid option name"),
        ("options:\n  x: {format: shell-code}\n", "is not allowed"),
        ("options:\n  x: {type: records}\n", "needs 'fields'"),
        ("options:\n  x: {type: records, fields: {a: {type: nope}}}\n", "is not allowed"),
        ("options:\n  h: {format: hostname, default: 'a b'}\n", "is not a valid host name"),
        ("options:\n  c: {choices: [a, b], default: c}\n", "must be one of"),
        ("options:\n  l: {type: list, format: package, default: [ok, 'no way']}\n", "package"),
        ('description: "\\e[2J"\n', "control character"),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_bad_element_yaml_is_refused_with_its_line(tmp_path: Path, spec: str, message: str) -> None:
    folder = element(tmp_path, "el", spec)
    with pytest.raises(ElementError) as caught:
        load_element(folder, "recipe")
    assert message in caught.value.message
    assert caught.value.location is not None
    assert caught.value.location.file == folder / "element.yaml"
    assert caught.value.hint


def test_a_default_of_a_record_field_points_at_its_line(tmp_path: Path) -> None:
    folder = element(
        tmp_path,
        "el",
        "options:\n  users:\n    type: records\n    fields: {name: {format: user}}\n"
        "    default:\n      - {name: ok}\n      - {name: 'x;y'}\n",
    )
    with pytest.raises(ElementError) as caught:
        load_element(folder, "recipe")
    assert caught.value.location is not None and caught.value.location.line == 7


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda f: (f / "static").symlink_to("/etc"), "'static' is a symlink"),
        (lambda f: (f / "install").symlink_to("/usr/bin"), "'install' is a symlink"),
        (
            lambda f: (f / "install").mkdir() or (f / "install" / "10-x").symlink_to("/bin/sh"),
            "leads out",
        ),
        (
            lambda f: (
                (f / "static" / "etc").mkdir(parents=True)
                or (f / "static" / "etc" / "shadow").symlink_to("/etc/shadow")
            ),
            "leads out of static/",
        ),
        (
            lambda f: (
                (f / "static" / "etc").mkdir(parents=True)
                or (f / "static" / "etc" / "up").symlink_to("../../../x")
            ),
            "leads out of static/",
        ),
        (
            lambda f: (f / "static").mkdir() or os.mkfifo(f / "static" / "pipe"),
            "not a regular file",
        ),
        (
            lambda f: (
                (f / "element.yaml").unlink() or (f / "element.yaml").symlink_to("/etc/hosts")
            ),
            "element.yaml is a symlink",
        ),
    ],
)
def test_an_elements_files_stay_in_its_folder(tmp_path: Path, make, message: str) -> None:
    folder = element(tmp_path, "el", "description: x\n")
    make(folder)
    with pytest.raises(ElementError, match=message):
        load_element(folder, "recipe")


def test_links_inside_the_element_are_fine(tmp_path: Path) -> None:
    folder = element(tmp_path, "el", "description: x\n", {"lib/tool": "#!/bin/sh\n"})
    (folder / "install").mkdir()
    (folder / "install" / "10-tool").symlink_to("../lib/tool")
    (folder / "static" / "etc" / "systemd").mkdir(parents=True)
    (folder / "static" / "etc" / "a").write_text("a\n")
    (folder / "static" / "etc" / "systemd" / "b").symlink_to("../a")
    assert load_element(folder, "recipe").name == "el"


def test_a_symlinked_element_folder_is_refused(tmp_path: Path) -> None:
    real = element(tmp_path / "elsewhere", "el", "description: x\n")
    (tmp_path / "elements").mkdir()
    (tmp_path / "elements" / "el").symlink_to(real)
    with pytest.raises(ElementError, match="its folder is a symlink"):
        load_element(tmp_path / "elements" / "el", "recipe")


def test_a_symlinked_recipe_elements_folder_is_refused(tmp_path: Path) -> None:
    element(tmp_path / "elsewhere", "el", "description: x\n")
    (tmp_path / "elements").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ElementError, match="elements folder"):
        SearchPath.for_recipe(tmp_path)


TYPED = """\
options:
  host: {format: hostname, default: localhost}
  zone: {format: timezone, default: Etc/UTC}
  pkgs: {type: list, format: package, default: []}
  accounts:
    type: records
    fields:
      name: {format: user}
      groups: {type: list, format: group}
      uid: {format: uid}
      admin: {type: boolean}
    default: []
"""


def resolved(tmp_path: Path, options: str) -> dict[str, str]:
    element(tmp_path / "elements", "acct", TYPED)
    path = tmp_path / "r.yaml"
    path.write_text(f"name: d\nelements: [acct]\noptions:\n  acct:\n{options}")
    recipe = load(path)
    elements = resolve(Catalog(SearchPath([(tmp_path / "elements", "recipe")])), [Request("acct")])
    values = resolve_options(recipe, elements)
    return option_environment(values["acct"], elements[0])


def test_typed_records_are_exported_in_field_order(tmp_path: Path) -> None:
    env = resolved(
        tmp_path,
        "    accounts:\n      - {name: ana, groups: [adm, sudo], uid: 1500, admin: true}\n"
        "      - {name: bo}\n",
    )
    assert env["OSBAKE_OPT_ACCOUNTS"] == "ana\x1fadm\x1esudo\x1f1500\x1f1\nbo\x1f\x1f\x1f"
    assert env["OSBAKE_OPT_HOST"] == "localhost"


@pytest.mark.parametrize(
    ("options", "message", "key"),
    [
        ("    host: 'web\\nx'\n", "is not a valid host name", "options.acct.host"),
        ('    host: "web\\nx"\n', "is not a valid host name", "options.acct.host"),
        ("    zone: ../../etc/shadow\n", "is not a valid time zone", "options.acct.zone"),
        ("    pkgs: [ok, 'a b']\n", "is not a valid package", "options.acct.pkgs[1]"),
        (
            "    accounts: [{name: 'bob;id'}]\n",
            "is not a valid user name",
            "options.acct.accounts[0].name",
        ),
        (
            "    accounts: [{name: bob, groups: [adm, 'x\\ny']}]\n",
            "is not a valid group name",
            "options.acct.accounts[0].groups[1]",
        ),
        (
            "    accounts: [{name: bob, uid: 99999999999}]\n",
            "is not a valid user id",
            "options.acct.accounts[0].uid",
        ),
        (
            "    accounts: [{name: bob, admin: 'yes'}]\n",
            "must be true or false",
            "options.acct.accounts[0].admin",
        ),
        (
            "    accounts: [{name: bob, groups: {a: 1}}]\n",
            "must be a list of strings",
            "options.acct.accounts[0].groups",
        ),
    ],
)
def test_option_values_are_checked_by_format(
    tmp_path: Path, options: str, message: str, key: str
) -> None:
    with pytest.raises(RecipeError) as caught:
        resolved(tmp_path, options)
    assert message in caught.value.message
    assert caught.value.location is not None and caught.value.location.key == key
    assert caught.value.hint


def test_untyped_record_fields_are_one_line_each() -> None:
    from osbake.elements.model import OptionSpec

    spec = OptionSpec(type="records", fields=["name", "tags"])
    assert check_value(spec, [{"name": "a", "tags": ["x", "y"]}], "o") == [
        {"name": "a", "tags": ["x", "y"]}
    ]
    for bad in ({"name": "a\x1fb"}, {"tags": ["x\ny"]}, {"name": {"deep": 1}}):
        with pytest.raises(FormatError):
            check_value(spec, [bad], "o")


def test_builtin_options_declare_formats() -> None:
    from osbake.elements.catalog import BUILTIN_DIR

    users = load_element(BUILTIN_DIR / "users", "built-in").spec.options["users"]
    assert users.field_specs()["name"] is not None
    base = load_element(BUILTIN_DIR / "base", "built-in").spec.options["hostname"]
    assert base.format is not None and base.format.value == "hostname"
