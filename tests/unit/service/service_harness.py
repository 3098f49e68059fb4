"""Drives an in-process console (SQLite, a recording queue) and plays its worker."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from osbake.service import auth
from osbake.service.deps import Console
from osbake.service.models import Role
from osbake.service.queue import ListQueue

RECIPE = """name: demo
distro: debian
release: bookworm
arch: [amd64, arm64]
elements: [users]
packages: [curl]
outputs: [tar]
variants:
  slim: {packages: [less]}
"""


class Harness:
    def __init__(self, app: Any, client: TestClient) -> None:
        self.app = app
        self.client = client
        self.console: Console = app.state.console
        self.queue: ListQueue = self.console.queue  # type: ignore[assignment]
        self.tokens: dict[str, str] = {}
        with self.console.db.session() as session:
            for role in ("viewer", "builder", "admin", "worker"):
                _, secret = auth.create_token(session, role, Role(role), granter=Role.ADMIN)
                self.tokens[role] = secret
            auth.create_user(session, "alice", "alice-password", Role.ADMIN)
            auth.create_user(session, "victor", "victor-password", Role.VIEWER)
            session.commit()

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def call(self, method: str, url: str, role: str = "admin", **kwargs: Any) -> Any:
        headers = {**self.headers(role), **kwargs.pop("headers", {})}
        return self.client.request(method, url, headers=headers, **kwargs)

    def upload(self, build_id: int, name: str, data: bytes, role: str = "worker") -> Any:
        import hashlib

        reply = self.call(
            "PUT",
            f"/api/worker/builds/{build_id}/files/{name}",
            role,
            content=data,
            headers={"X-Checksum-Sha256": hashlib.sha256(data).hexdigest()},
        )
        assert reply.status_code == 201, reply.text
        return reply

    def configuration(self, name: str = "demo", recipe: str = RECIPE, **extra: Any) -> Any:
        response = self.call(
            "POST",
            "/api/configurations",
            "builder",
            json={"name": name, "files": {"recipe.yaml": recipe, **extra}},
        )
        assert response.status_code == 201, response.text
        return response.json()

    def build(self, name: str = "demo", **body: Any) -> dict[str, Any]:
        response = self.call("POST", "/api/builds", "builder", json={"configuration": name, **body})
        assert response.status_code == 201, response.text
        return response.json()[0]  # type: ignore[no-any-return]

    def run_fake(
        self,
        build_id: int,
        *,
        ok: bool = True,
        fail_step: str | None = None,
        packages: list[tuple[str, str]] | None = None,
        disk: bool = False,
        boot: str | None = None,
    ) -> dict[str, Any]:
        """Play a worker: claim, report events, upload, finish."""
        w = "worker"
        assert (
            self.call(
                "POST", f"/api/worker/builds/{build_id}/claim", w, json={"worker": "test"}
            ).status_code
            == 200
        )
        steps = ["bootstrap", "packages", "output tar"]
        events: list[dict[str, Any]] = [
            {
                "event": "begin",
                "time": 1.0,
                "image": "demo",
                "steps": [{"name": s, "key": "k", "describe": s} for s in steps],
            }
        ]
        for step in steps:
            events += [
                {"event": "step", "time": 2.0, "name": step},
                {"event": "log", "time": 2.1, "line": f"{step} output"},
            ]
            if step == fail_step:
                events.append(
                    {
                        "event": "finish",
                        "time": 3.0,
                        "ok": False,
                        "step": step,
                        "error": f"step '{step}' failed: tool exited with status 1",
                        "artifacts": [],
                    }
                )
                break
            events.append(
                {"event": "result", "time": 3.0, "name": step, "seconds": 1.0, "status": "done"}
            )
        reply = self.call("POST", f"/api/worker/builds/{build_id}/events", w, json=events)
        assert reply.status_code == 200, reply.text
        if fail_step or not ok:
            return self.call(
                "POST",
                f"/api/worker/builds/{build_id}/finish",
                w,
                json={"ok": False, "error": None, "step": fail_step},
            ).json()
        data = b"artifact of build %d\n" % build_id * 100
        import hashlib

        artifacts = [
            {
                "file": "demo.tar",
                "format": "tar",
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ]
        self.upload(build_id, "demo.tar", data)
        if disk:
            artifacts.append(
                {
                    "file": "demo.raw",
                    "format": "raw",
                    "size": len(data) + 3,
                    "sha256": hashlib.sha256(data + b"raw").hexdigest(),
                }
            )
            self.upload(build_id, "demo.raw", data + b"raw")
        manifest = {
            "osbake_version": "test",
            "image": "demo",
            "name": "demo",
            "arch": "amd64",
            "distro": "debian",
            "release": "bookworm",
            "recipe": {"name": "demo"},
            "recipe_sha256": "r" * 64,
            "packages": [
                {"name": n, "version": v, "arch": "amd64", "source": n, "source_version": v}
                for n, v in (packages or [("curl", "7.88")])
            ],
            "artifacts": artifacts,
            "build": {"started": f"2026-01-01T00:00:{build_id:02d}+00:00"},
        }
        boot_state = boot or ("passed" if disk else "none")
        return self.call(
            "POST",
            f"/api/worker/builds/{build_id}/finish",
            w,
            json={
                "ok": True,
                "manifest": manifest,
                "boot_state": boot_state,
                "boot_detail": "test",
            },
        ).json()
