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


def test_two_builds_of_a_configuration_are_compared_on_the_api_and_a_page(
    harness: Harness,
) -> None:
    harness.configuration()
    old = harness.build()
    harness.run_fake(old["id"], packages=[("curl", "7.88"), ("openssl", "3.0.2")])
    running = harness.build()
    new = harness.build()
    harness.run_fake(new["id"], packages=[("curl", "7.88"), ("openssl", "3.0.11"), ("jq", "1.6")])
    found = harness.call("GET", f"/api/builds/{old['id']}/diff/{new['id']}", "viewer")
    assert found.status_code == 200, found.text
    result = found.json()
    assert result["identical"] is False
    assert result["old"].startswith(f"build {old['id']} (demo v1 ")
    assert result["packages"]["added"] == [{"name": "jq", "version": "1.6", "arch": "amd64"}]
    assert result["packages"]["removed"] == []
    assert result["packages"]["changed"] == [
        {"name": "openssl", "old": "3.0.2", "new": "3.0.11", "change": "upgraded"}
    ]
    same = harness.call("GET", f"/api/builds/{new['id']}/diff/{new['id']}", "viewer").json()
    assert same["identical"] is True
    # a build without a manifest yet: 409 with what to do; no such build: 404
    pending = harness.call("GET", f"/api/builds/{old['id']}/diff/{running['id']}", "viewer")
    assert pending.status_code == 409
    assert f"build {running['id']} has no manifest" in pending.json()["error"]
    assert pending.json()["hint"]
    missing = harness.call("GET", f"/api/builds/{old['id']}/diff/999999", "viewer")
    assert missing.status_code == 404
    # the page of the newer build links to the comparison with the previous succeeded one
    login(harness, "victor", "victor-password")
    page = harness.client.get(f"/builds/{new['id']}").text
    assert f'id="compare-link" href="/builds/{old["id"]}/diff/{new["id"]}"' in page
    assert 'id="compare-link"' not in harness.client.get(f"/builds/{old['id']}").text
    shown = harness.client.get(f"/builds/{old['id']}/diff/{new['id']}").text
    assert "+ jq 1.6 (amd64)" in shown
    assert "~ openssl 3.0.2 -&gt; 3.0.11" in shown
