"""The YAML loader's bounds: size, alias expansion, depth, values PyYAML cannot build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from osbake.errors import RecipeError, UsageError
from osbake.recipe import yamlpos
from tests.integration.hostile_corpus import LAUGHS


def load(tmp_path: Path, text: str | bytes) -> tuple[object, yamlpos.Positions]:
    path = tmp_path / "r.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return yamlpos.load(path)


def error(tmp_path: Path, text: str | bytes) -> RecipeError:
    with pytest.raises(RecipeError) as caught:
        load(tmp_path, text)
    return caught.value


def test_positions_name_the_line_of_each_key_and_item(tmp_path: Path) -> None:
    data, positions = load(tmp_path, "name: x\npackages:\n  - curl\n  - less\ndisk: {size: 4GiB}\n")
    assert data == {"name": "x", "packages": ["curl", "less"], "disk": {"size": "4GiB"}}
    assert positions[("packages",)].line == 2
    assert positions[("packages", 1)].line == 4
    assert positions[("disk", "size")].line == 5


def test_billion_laughs_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    err = error(tmp_path, LAUGHS)
    assert "expands to more than 250,000 values" in err.message
    assert err.hint and "aliases" in err.hint


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    data, _ = load(tmp_path, "name: x\nbase: &b [curl, less]\npackages: *b\nmore: [*b, *b]\n")
    assert isinstance(data, dict) and data["packages"] == ["curl", "less"]


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    err = error(tmp_path, "name: x\npackages: &a [*a]\n")
    assert "recursive alias" in err.message
    assert err.location is not None and err.location.line == 2


def test_nesting_is_bounded(tmp_path: Path) -> None:
    assert "nested" in error(tmp_path, "a: " + "[" * 100 + "]" * 100 + "\n").message
    assert "nested" in error(tmp_path, "".join("  " * i + "a:\n" for i in range(80))).message


def test_the_file_size_is_bounded_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as handle:
        handle.truncate(64 * 1024**3)  # sparse: reading it all would take minutes
    with pytest.raises(RecipeError, match="larger than the limit of 4 MiB"):
        yamlpos.load(path)


def test_devices_and_fifos_are_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    with pytest.raises(RecipeError, match="not a regular file"):
        yamlpos.load(tmp_path / "pipe.yaml")
    with pytest.raises(RecipeError, match="not a regular file"):
        yamlpos.load(Path("/dev/zero"))


def test_a_symlink_is_refused_where_links_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "element.yaml").symlink_to("/etc/os-release")
    with pytest.raises(RecipeError, match="is a symlink"):
        yamlpos.load(tmp_path / "element.yaml", follow=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"x: {'9' * 5000}\n", "is not a valid number"),
        ("x: !!float abc\n", "is not a valid number"),
        ("x: !!binary aGk=\n", "is not allowed here"),
        ("x: !!set {a}\n", "is not allowed here"),
        ("x: !!python/object/apply:os.system [id]\n", "not valid YAML"),
        ("? [a]\n: b\n", "a key must be a plain word"),
        ("a: 1\na: 2\n", "appears twice"),
        (b"x: \xff\n", "not UTF-8"),
    ],
)
def test_values_that_cannot_be_built_are_errors_with_a_line(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    err = error(tmp_path, text)
    assert message in err.message
    assert err.location is not None and err.location.line is not None
    assert err.hint


def test_dates_stay_text_in_recipes(tmp_path: Path) -> None:
    data, _ = load(tmp_path, "release: 2024-01-01\n")
    assert data == {"release": "2024-01-01"}


def test_plain_data_for_seeds_keeps_yaml_types_and_the_same_bounds() -> None:
    assert yamlpos.load_data("when: 2024-01-01\n")["when"].year == 2024
    with pytest.raises(UsageError, match="expands to more than"):
        yamlpos.load_data(LAUGHS, error=UsageError)
    with pytest.raises(UsageError, match="is not a valid date"):
        yamlpos.load_data("when: 2024-13-45\n", error=UsageError)
    with pytest.raises(UsageError, match="is not allowed here"):
        yamlpos.load_data("x: !!binary aGk=\n", error=UsageError, plain=True)


def test_a_syntax_error_gets_the_clearer_message(tmp_path: Path) -> None:
    err = error(tmp_path, "name: x\npackages:\n\t- curl\n")
    assert "'\\t'" in err.message  # PyYAML's parser names the tab; libyaml does not
    assert err.location is not None and err.location.line == 3
