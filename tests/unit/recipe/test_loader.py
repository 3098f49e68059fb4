from __future__ import annotations

from pathlib import Path

import pytest

from osbake.errors import RecipeError
from osbake.recipe import load, select_variant
from osbake.recipe.model import OutputFormat


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def error_of(path: Path) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        load(path)
    return info.value


def test_minimal_recipe_gets_defaults(tmp_path: Path) -> None:
    recipe = load(write(tmp_path / "r.yaml", "name: demo\n"))
    assert recipe.release == "bookworm"
    assert [str(a) for a in recipe.arch] == ["amd64"]
    assert recipe.outputs == [OutputFormat.TAR]
    assert recipe.source == tmp_path / "r.yaml"


def test_unknown_key_names_line_and_suggests(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "r.yaml", "name: demo\nrelease: bookworm\npakages: [curl]\n"))
    text = err.render()
    assert f"{tmp_path / 'r.yaml'}:3" in text
    assert "unknown key 'pakages'" in text
    assert "did you mean 'packages'" in text


def test_unknown_nested_key(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.yaml", "name: d\nfiles:\n  - src: a\n    dest: /a\n    mdoe: '0644'\n"
    )
    err = error_of(path)
    assert err.location is not None and err.location.line == 5
    assert "did you mean 'mode'" in (err.hint or "")


def test_bad_type_says_what_is_expected(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "r.yaml", "name: d\npackages: curl\n"))
    assert err.location is not None and err.location.line == 2
    assert "must be a list" in err.message
    assert "packages: [curl]" in (err.hint or "")


def test_bad_enum_lists_choices(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "r.yaml", "name: d\noutputs: [tar, qcow3]\n"))
    assert "'qcow3'" in err.message
    assert "qcow2" in (err.hint or "")


def test_unquoted_mode_is_explained(tmp_path: Path) -> None:
    (tmp_path / "motd").write_text("hi")
    err = error_of(
        write(
            tmp_path / "r.yaml", "name: d\nfiles:\n  - {src: motd, dest: /etc/motd, mode: 0644}\n"
        )
    )
    assert "quotes" in err.message


def test_missing_file_names_its_line(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "r.yaml", "name: d\nfiles:\n  - {src: nope, dest: /x}\n"))
    assert err.location is not None and err.location.line == 3
    assert "does not exist" in err.message


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "r.yaml", "name: d\npackages: [curl\nrelease: x\n"))
    assert "not valid YAML" in err.message
    assert err.location is not None and err.location.line is not None


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "r.yaml", "name: d\nrelease: a\nrelease: b\n"))
    assert "appears twice" in err.message
    assert err.location is not None and err.location.line == 3


def test_variants_merge_by_the_documented_rules(tmp_path: Path) -> None:
    recipe = load(
        write(
            tmp_path / "r.yaml",
            """\
name: d
elements: [users, locale]
packages: [curl, less]
outputs: [tar, oci]
options:
  users: {lock_root: true}
variants:
  slim:
    elements: [-locale, timezone]
    packages: [-less, vim]
    outputs: [tar.xz]
    options:
      users: {users: []}
""",
        )
    )
    slim = select_variant(recipe, "slim")
    assert slim.variant == "slim"
    assert slim.elements == ["users", "timezone"]
    assert slim.packages == ["curl", "vim"]
    assert slim.outputs == [OutputFormat.TAR_XZ]
    assert slim.options["users"] == {"lock_root": True, "users": []}
    assert recipe.elements == ["users", "locale"]  # the base is untouched


def test_variant_errors_point_into_the_variant(tmp_path: Path) -> None:
    err = error_of(
        write(
            tmp_path / "r.yaml",
            "name: d\nvariants:\n  big:\n    packages: [vim]\n    outputs: [nope]\n",
        )
    )
    assert "variant 'big'" in err.message
    assert err.location is not None and err.location.line == 5


def test_variant_cannot_rename(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "r.yaml", "name: d\nvariants:\n  x: {name: other}\n"))
    assert "cannot set 'name'" in err.message


def test_unknown_variant_lists_the_known(tmp_path: Path) -> None:
    recipe = load(write(tmp_path / "r.yaml", "name: d\nvariants:\n  ec2: {}\n"))
    with pytest.raises(RecipeError) as info:
        select_variant(recipe, "ec3")
    assert "ec2" in (info.value.hint or "")


def test_extends_merges_and_resolves_paths_per_file(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "motd").write_text("base motd")
    write(
        tmp_path / "base" / "base.yaml",
        """\
name: base
packages: [curl]
files: [{src: motd, dest: /etc/motd}]
""",
    )
    (tmp_path / "issue").write_text("x")
    recipe = load(
        write(
            tmp_path / "child.yaml",
            """\
extends: base/base.yaml
name: child
packages: [vim]
files: [{src: issue, dest: /etc/issue}]
""",
        )
    )
    assert recipe.name == "child"
    assert recipe.packages == ["curl", "vim"]
    from osbake.recipe import resolve_path

    assert resolve_path(recipe, ("files", 0, "src"), "motd") == tmp_path / "base" / "motd"
    assert resolve_path(recipe, ("files", 1, "src"), "issue") == tmp_path / "issue"


def test_extends_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "extends: b.yaml\nname: a\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\nname: b\n")
    err = error_of(tmp_path / "a.yaml")
    assert "cycle" in err.message


def test_extends_missing_file(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "a.yaml", "name: a\nextends: nope.yaml\n"))
    assert "does not exist" in err.message
    assert err.location is not None and err.location.line == 2


def test_normalised_recipe_is_plain_data(tmp_path: Path) -> None:
    recipe = load(write(tmp_path / "r.yaml", "name: d\narch: amd64\n"))
    data = recipe.normalised()
    assert data["arch"] == ["amd64"]
    assert "variants" not in data


def test_variant_removing_an_element_drops_its_options(tmp_path: Path) -> None:
    recipe = load(
        write(
            tmp_path / "r.yaml",
            """\
name: d
elements: [users, timezone]
options:
  timezone: {zone: Europe/Berlin}
variants:
  utc:
    elements: [-timezone]
""",
        )
    )
    utc = select_variant(recipe, "utc")
    assert utc.elements == ["users"]
    assert "timezone" not in utc.options


def test_removal_in_a_parent_does_not_remove_the_childs_item(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "name: base\npackages: [curl, -vim]\n")
    recipe = load(write(tmp_path / "child.yaml", "extends: base.yaml\nname: c\npackages: [vim]\n"))
    assert recipe.packages == ["curl", "vim"]


def test_child_removes_from_parent(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "name: base\npackages: [curl, vim]\n")
    recipe = load(write(tmp_path / "child.yaml", "extends: base.yaml\nname: c\npackages: [-vim]\n"))
    assert recipe.packages == ["curl"]


def test_diamond_extends_merges_the_shared_parent_once(tmp_path: Path) -> None:
    write(tmp_path / "root.yaml", "name: root\nrun: [echo once]\n")
    write(tmp_path / "a.yaml", "extends: root.yaml\nname: a\n")
    write(tmp_path / "b.yaml", "extends: root.yaml\nname: b\n")
    recipe = load(write(tmp_path / "c.yaml", "extends: [a.yaml, b.yaml]\nname: c\n"))
    assert recipe.run == ["echo once"]


def test_child_variants_merge_with_the_parents(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "name: base\nvariants:\n  a: {packages: [xx]}\n")
    recipe = load(
        write(
            tmp_path / "child.yaml",
            "extends: base.yaml\nname: c\nvariants:\n  b: {packages: [yy]}\n",
        )
    )
    assert set(recipe.variants) == {"a", "b"}


def test_run_commands_starting_with_a_dash_are_kept(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "name: base\nrun: ['echo a']\n")
    recipe = load(write(tmp_path / "child.yaml", "extends: base.yaml\nname: c\nrun: ['-true']\n"))
    assert recipe.run == ["echo a", "-true"]


def test_the_same_output_twice(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "r.yaml", "name: d\noutputs: [tar, tar.zst]\n"))
    assert "same output twice" in err.message


def test_recipe_elements_folders_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "base" / "elements").mkdir(parents=True)
    write(tmp_path / "base" / "base.yaml", "name: base\n")
    recipe = load(write(tmp_path / "child.yaml", "extends: base/base.yaml\nname: c\n"))
    assert recipe.source_dirs == [tmp_path, tmp_path / "base"]
