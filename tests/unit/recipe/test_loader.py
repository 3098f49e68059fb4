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


# -- extends: itself, cycles, confinement --------------------------------------------------


def test_extends_itself_names_the_line(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "a.yaml", "name: a\nextends: a.yaml\n"))
    assert "extends itself" in err.message
    assert err.location is not None and err.location.line == 2
    assert err.location.file == tmp_path / "a.yaml"
    assert err.hint


def test_extends_itself_through_another_path_is_found(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    err = error_of(write(tmp_path / "a.yaml", "name: a\nextends: sub/../a.yaml\n"))
    assert "extends itself" in err.message


def test_a_cycle_through_several_files_names_the_entry_that_closes_it(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", "extends: c.yaml\n")
    write(tmp_path / "c.yaml", "release: trixie\nextends: [b.yaml]\n")
    err = error_of(write(tmp_path / "a.yaml", "name: a\nextends: b.yaml\n"))
    assert "cycle" in err.message and "b.yaml -> " in err.message
    assert err.location is not None
    assert err.location.file == tmp_path / "c.yaml" and err.location.line == 2


def test_a_stored_configuration_cannot_extend_outside_itself(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    write(tmp_path / "base.yaml", "release: trixie\n")
    path = write(tmp_path / "config" / "r.yaml", "name: r\nextends: ../base.yaml\n")
    assert load(path).release == "trixie"  # the CLI: extends may go anywhere
    with pytest.raises(RecipeError, match="outside the configuration") as caught:
        load(path, root=tmp_path / "config")
    assert caught.value.location is not None and caught.value.location.line == 2


def test_too_many_files(tmp_path: Path) -> None:
    for n in range(40):
        write(tmp_path / f"r{n}.yaml", f"extends: r{n + 1}.yaml\n")
    write(tmp_path / "r40.yaml", "name: r\n")
    err = error_of(tmp_path / "r0.yaml")
    assert "more than 32 files" in err.message


def test_a_removal_must_name_a_valid_name(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "r.yaml", "name: r\npackages: [curl, --force-yes]\n"))
    assert "is not a valid package" in err.message
    assert err.location is not None and err.location.line == 2


def test_files_of_a_parent_stay_in_the_parent_folder(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "secret").write_text("x")
    write(tmp_path / "base" / "base.yaml", "files:\n  - {src: ../secret, dest: /x}\n")
    err = error_of(write(tmp_path / "r.yaml", "name: r\nextends: base/base.yaml\n"))
    assert "leaves the recipe's folder" in err.message
    assert err.location is not None and err.location.file == tmp_path / "base" / "base.yaml"


def test_files_of_a_variant_are_checked_at_load(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/etc/hostname")
    err = error_of(
        write(tmp_path / "r.yaml", "name: r\nvariants:\n  v:\n    files: [{src: link, dest: /x}]\n")
    )
    assert "symlink" in err.message
    assert err.location is not None and err.location.key == "variants.v.files[0].src"


# -- variants are merged from validated values -------------------------------------------------


def test_variant_merge_keeps_the_rules_and_positions(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    recipe = load(
        write(
            tmp_path / "r.yaml",
            """\
name: r
packages: [curl, less, curl]
files: [{src: a, dest: /a}]
run: [echo base]
output_options: {qcow2: {compression: zlib}}
variants:
  v:
    packages: [-curl, vim, vim]
    files: [{src: b, dest: /b}]
    run: [echo v]
    output_options: {qcow2: {compression: none}}
    release: trixie
""",
        )
    )
    v = select_variant(recipe, "v")
    assert recipe.packages == ["curl", "less"]
    assert v.packages == ["less", "vim"]
    assert [f.dest for f in v.files] == ["/a", "/b"]
    assert v.run == ["echo base", "echo v"]
    assert v.output_options == {"qcow2": {"compression": "none"}}
    assert v.release == "trixie" and recipe.release == "bookworm"
    assert v.variants == {}
    # A key from the variant points into the variant, an inherited one into the base.
    assert v.positions[("files", 1, "src")].line == 9
    assert v.positions[("files", 0, "src")].line == 3
    assert v.positions[("release",)].line == 12


def test_a_large_recipe_with_many_variants_loads(tmp_path: Path) -> None:
    """40,000 packages and 200 variants (bench/recipe_load.py measures how fast)."""
    text = "name: big\npackages:\n" + "".join(f"  - package-{i}\n" for i in range(40_000))
    text += "variants:\n" + "".join(f"  v{i}: {{packages: [extra-{i}]}}\n" for i in range(200))
    recipe = load(write(tmp_path / "r.yaml", text))
    assert len(recipe.packages) == 40_000
    assert select_variant(recipe, "v199").packages[-1] == "extra-199"
