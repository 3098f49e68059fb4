"""The web pages: log-in, CSRF on forms, recipe errors on the page, the build page."""

from __future__ import annotations

import re

from tests.unit.service.service_harness import RECIPE, Harness


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def login(harness: Harness, name: str = "alice", password: str = "alice-password") -> str:
    token = csrf(harness.client.get("/login").text)
    response = harness.client.post(
        "/login",
        data={"csrf_token": token, "name": name, "password": password, "next": "/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return csrf(harness.client.get("/").text)


def test_pages_need_a_log_in(harness: Harness) -> None:
    response = harness.client.get("/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")
    token = csrf(harness.client.get("/login").text)
    wrong = harness.client.post(
        "/login", data={"csrf_token": token, "name": "alice", "password": "nope"}
    )
    assert wrong.status_code == 401
    assert "Wrong user name or password" in wrong.text


def test_forms_without_the_csrf_token_are_refused(harness: Harness) -> None:
    token = login(harness)
    form = {"name": "web", "recipe": RECIPE}
    forged = harness.client.post("/configurations", data=form, follow_redirects=False)
    assert forged.status_code == 403
    made = harness.client.post(
        "/configurations", data={**form, "csrf_token": token}, follow_redirects=False
    )
    assert made.status_code == 303
    assert made.headers["location"] == "/configurations/web"
    # the same through the API with the session cookie needs the header
    assert harness.client.post("/api/builds", json={"configuration": "web"}).status_code == 403
    ok = harness.client.post(
        "/api/builds", json={"configuration": "web"}, headers={"X-CSRF-Token": token}
    )
    assert ok.status_code == 201


def test_a_broken_recipe_shows_where_and_how_to_fix_it(harness: Harness) -> None:
    token = login(harness)
    response = harness.client.post(
        "/configurations",
        data={"csrf_token": token, "name": "web", "recipe": "name: web\noutputs: [tarball]\n"},
    )
    assert response.status_code == 422
    assert "recipe.yaml:2" in response.text
    assert "hint:" in response.text
    assert "tarball" in response.text  # the form keeps what was typed


def test_a_viewer_sees_no_build_button(harness: Harness) -> None:
    harness.configuration()
    login(harness, "victor", "victor-password")
    page = harness.client.get("/configurations/demo").text
    assert 'id="build-button"' not in page
    token = csrf(page)
    refused = harness.client.post("/configurations/demo/builds", data={"csrf_token": token})
    assert refused.status_code == 403


def test_the_build_page_shows_a_failure_first_and_the_manifest_page(harness: Harness) -> None:
    harness.configuration()
    failed = harness.build()
    harness.run_fake(failed["id"], fail_step="packages")
    good = harness.build()
    harness.run_fake(good["id"], packages=[("openssl", "3.0.2")])
    login(harness)
    page = harness.client.get(f"/builds/{failed['id']}").text
    assert page.index('id="failure"') < page.index('id="steps"')
    assert "packages output" in page
    page = harness.client.get(f"/builds/{good['id']}").text
    assert "demo.tar" in page
    assert 'id="manifest-link"' in page
    manifest = harness.client.get(f"/builds/{good['id']}/manifest").text
    assert "openssl" in manifest
    assert "3.0.2" in manifest
    found = harness.client.get("/search?package=openssl").text
    assert f"/builds/{good['id']}" in found
