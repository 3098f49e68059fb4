from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from osbake.elements import Catalog, Request, SearchPath, resolve
from osbake.elements.model import load_element
from osbake.errors import ElementError, ResolveError


def element(root: Path, name: str, yaml: str = "", scripts: dict[str, str] | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "element.yaml").write_text(textwrap.dedent(yaml))
    for rel, body in (scripts or {}).items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        path.chmod(0o755)
    return folder


def catalog(root: Path) -> Catalog:
    return Catalog(SearchPath([(root, "test")]))


def names(root: Path, *requested: str) -> list[str]:
    return [e.name for e in resolve(catalog(root), [Request(n) for n in requested])]


def test_dependencies_come_first(tmp_path: Path) -> None:
    element(tmp_path, "a", "depends: [b]\n")
    element(tmp_path, "b", "depends: [c]\n")
    element(tmp_path, "c")
    assert names(tmp_path, "a") == ["c", "b", "a"]


def test_virtual_dependency_satisfied_by_chosen_provider(tmp_path: Path) -> None:
    element(tmp_path, "app", "depends: [ssh-server]\n")
    element(tmp_path, "openssh", "provides: [ssh-server]\n")
    element(tmp_path, "dropbear", "provides: [ssh-server]\n")
    assert names(tmp_path, "dropbear", "app") == ["dropbear", "app"]


def test_virtual_dependency_with_many_providers_asks_to_choose(tmp_path: Path) -> None:
    element(tmp_path, "app", "depends: [ssh-server]\n")
    element(tmp_path, "openssh", "provides: [ssh-server]\n")
    element(tmp_path, "dropbear", "provides: [ssh-server]\n")
    with pytest.raises(ResolveError) as info:
        names(tmp_path, "app")
    assert "dropbear, openssh" in info.value.message


def test_single_provider_is_picked(tmp_path: Path) -> None:
    element(tmp_path, "app", "depends: [ssh-server]\n")
    element(tmp_path, "openssh", "provides: [ssh-server]\n")
    assert names(tmp_path, "app") == ["openssh", "app"]


def test_two_providers_chosen_is_an_error(tmp_path: Path) -> None:
    element(tmp_path, "openssh", "provides: [ssh-server]\n")
    element(tmp_path, "dropbear", "provides: [ssh-server]\n")
    with pytest.raises(ResolveError) as info:
        names(tmp_path, "openssh", "dropbear")
    assert "provided by both" in info.value.message


def test_conflict_is_reported_with_its_line(tmp_path: Path) -> None:
    element(tmp_path, "a", "description: x\nconflicts: [b]\n")
    element(tmp_path, "b")
    with pytest.raises(ResolveError) as info:
        names(tmp_path, "a", "b")
    assert "conflicts with 'b'" in info.value.message
    assert info.value.location is not None and info.value.location.line == 2


def test_cycle_is_named(tmp_path: Path) -> None:
    element(tmp_path, "a", "depends: [b]\n")
    element(tmp_path, "b", "depends: [a]\n")
    with pytest.raises(ResolveError) as info:
        names(tmp_path, "a")
    assert "cycle" in info.value.message
    assert "a -> b -> a" in info.value.message or "b -> a -> b" in info.value.message


def test_unknown_element_suggests_close_names(tmp_path: Path) -> None:
    element(tmp_path, "openssh-server")
    with pytest.raises(ResolveError) as info:
        names(tmp_path, "openssh-sever")
    assert "unknown element 'openssh-sever'" in info.value.message
    assert "openssh-server" in (info.value.hint or "")


def test_unknown_dependency_points_at_element_yaml(tmp_path: Path) -> None:
    element(tmp_path, "a", "description: x\ndepends: [nope]\n")
    with pytest.raises(ResolveError) as info:
        names(tmp_path, "a")
    assert info.value.location is not None
    assert info.value.location.file == tmp_path / "a" / "element.yaml"
    assert info.value.location.line == 2


def test_higher_folder_replaces_an_element(tmp_path: Path) -> None:
    low, high = tmp_path / "low", tmp_path / "high"
    element(low, "x", "description: low\n")
    element(high, "x", "description: high\n")
    cat = Catalog(SearchPath([(high, "recipe"), (low, "built-in")]))
    assert cat.get("x").spec.description == "high"
    assert cat.shadowed("x") == [low / "x"]


def test_script_without_number_is_rejected(tmp_path: Path) -> None:
    folder = element(tmp_path, "a", scripts={"install/setup": "#!/bin/sh\n"})
    with pytest.raises(ElementError) as info:
        load_element(folder, "test")
    assert "numeric prefix" in info.value.message


def test_script_not_executable_is_rejected(tmp_path: Path) -> None:
    folder = element(tmp_path, "a", scripts={"install/10-setup": "#!/bin/sh\n"})
    (folder / "install" / "10-setup").chmod(0o644)
    with pytest.raises(ElementError) as info:
        load_element(folder, "test")
    assert "chmod +x" in (info.value.hint or "")


def test_bad_element_yaml_points_at_line(tmp_path: Path) -> None:
    folder = element(tmp_path, "a", "description: x\ndepend: [b]\n")
    with pytest.raises(ElementError) as info:
        load_element(folder, "test")
    assert info.value.location is not None and info.value.location.line == 2


def test_content_hash_changes_with_a_script(tmp_path: Path) -> None:
    folder = element(
        tmp_path,
        "a",
        scripts={"install/10-x": "#!/bin/sh\necho 1\n", "finalise/10-y": "#!/bin/sh\n"},
    )
    before = load_element(folder, "t")
    install, finalise = before.content_hash("install"), before.content_hash("finalise")
    (folder / "install" / "10-x").write_text("#!/bin/sh\necho 2\n")
    after = load_element(folder, "t")
    assert after.content_hash("install") != install
    assert after.content_hash("finalise") == finalise


def test_content_hash_of_a_phase_covers_the_files_its_scripts_read(tmp_path: Path) -> None:
    """lib/ and data files sit outside the phase folders; a change to them must show."""
    folder = element(
        tmp_path,
        "a",
        scripts={"install/10-x": "#!/bin/sh\n. $OSBAKE_ELEMENT_DIR/lib/helper\n"},
    )
    (folder / "lib").mkdir()
    (folder / "lib" / "helper").write_text("echo 1\n")
    before = load_element(folder, "t").content_hash("install")
    (folder / "lib" / "helper").write_text("echo 2\n")
    assert load_element(folder, "t").content_hash("install") != before
    changed = load_element(folder, "t").content_hash("install")
    (folder / "list.txt").write_text("one\n")
    assert load_element(folder, "t").content_hash("install") != changed


def test_builtin_elements_all_load() -> None:
    from osbake.elements.catalog import BUILTIN_DIR

    cat = Catalog(SearchPath([(BUILTIN_DIR, "built-in")]))
    for name in (
        "base",
        "debian",
        "apt-proxy",
        "users",
        "openssh-server",
        "locale",
        "timezone",
        "packages",
        "files",
        "run",
    ):
        assert cat.get(name).name == name
