"""Importing configurations from a git repository and from a directory (real git)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from osbake.service import auth
from osbake.service.app import create_app
from osbake.service.config import ServiceSettings
from osbake.service.models import Role
from osbake.service.queue import ListQueue

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = ServiceSettings.create(tmp_path / "data", queue_url="memory://")
    app = create_app(settings, queue=ListQueue(), background=False)
    with TestClient(app) as test_client:
        with app.state.console.db.session() as session:
            _, secret = auth.create_token(session, "admin", Role.ADMIN, granter=Role.ADMIN)
            session.commit()
        yield test_client, {"Authorization": f"Bearer {secret}"}


def git_repository(root: Path) -> Path:
    repo = root / "images"
    (repo / "minimal").mkdir(parents=True)
    shutil.copy(EXAMPLES / "debian-minimal.yaml", repo / "minimal" / "recipe.yaml")
    shutil.copytree(EXAMPLES / "files", repo / "minimal" / "files")
    (repo / "README").write_text("images\n")
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "PATH": "/usr/bin:/bin",
        "HOME": str(root),
    }
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "."],
        ["git", "commit", "-qm", "one"],
    ):
        subprocess.run(argv, cwd=repo, check=True, env=env)
    return repo


def test_import_from_git_then_a_new_commit_is_a_new_version(
    client: tuple[TestClient, dict[str, str]], tmp_path: Path
) -> None:
    test_client, headers = client
    repo = git_repository(tmp_path)
    form = {"name": "minimal", "git_url": str(repo), "git_ref": "main", "subdir": "minimal"}
    reply = test_client.post("/api/configurations/import", data=form, headers=headers)
    assert reply.status_code == 201, reply.text
    assert reply.json()["number"] == 1
    assert reply.json()["source"] == f"git {repo}@main minimal"
    files = test_client.get("/api/configurations/minimal/versions/1", headers=headers).json()[
        "files"
    ]
    copied = {f"files/{path.name}" for path in (EXAMPLES / "files").iterdir()}
    assert "files/motd" in copied
    assert {f["path"] for f in files} == {"recipe.yaml", *copied}
    (repo / "minimal" / "files" / "motd").write_text("a new message of the day\n")
    subprocess.run(
        ["git", "commit", "-qam", "two"],
        cwd=repo,
        check=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
        },
    )
    again = test_client.post("/api/configurations/import", data=form, headers=headers).json()
    assert again["number"] == 2
    diff = test_client.get("/api/configurations/minimal/diff?a=1&b=2", headers=headers).text
    assert "+a new message of the day" in diff


def test_a_bad_git_url_is_a_clear_error(
    client: tuple[TestClient, dict[str, str]], tmp_path: Path
) -> None:
    test_client, headers = client
    reply = test_client.post(
        "/api/configurations/import",
        headers=headers,
        data={"name": "nothing", "git_url": str(tmp_path / "no-such-repo")},
    )
    assert reply.status_code in (400, 422)
    assert "git exited with status" in reply.json()["error"]
    assert reply.json()["hint"]


def test_import_from_a_directory_needs_an_admin_and_keeps_the_files(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    test_client, headers = client
    reply = test_client.post(
        "/api/configurations/import",
        headers=headers,
        data={"name": "examples", "directory": str(EXAMPLES), "recipe_file": "debian-minimal.yaml"},
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["targets"] == [{"variant": None, "arch": "amd64"}]
