"""The console in a real browser: log in, create a configuration, build, watch, download.

Debian's chromium, driven by Playwright, against `osbake serve` on a fresh data
directory (SQLite, embedded worker) that runs a real `osbake build`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.service_support import ADMIN_PASSWORD, RunningConsole, build_runtime

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# examples/debian-minimal.yaml with one output and no files of its own
RECIPE = """name: console-minimal
description: Minimal Debian bookworm, built from the console
distro: debian
release: bookworm
arch: [amd64]
elements: [users, locale, timezone]
packages: [ca-certificates, less]
run:
  - echo "built by the osbake console" > /etc/osbake-release
options:
  users:
    users:
      - {name: debian, groups: [adm], shell: /bin/bash}
  timezone:
    zone: Etc/UTC
outputs: [tar]
"""


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsole]:
    # builds run as the build user: osbake from a place that user can run it
    running = RunningConsole(tmp_path_factory.mktemp("browser") / "data", env=build_runtime())
    try:
        yield running
    finally:
        running.stop()


def test_log_in_create_build_watch_download_and_read_the_manifest(
    console: RunningConsole, tmp_path: Path
) -> None:
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright (PyPI) is missing"
    )
    assert CHROMIUM.exists(), "chromium is missing: apt-get install chromium"
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_context(accept_downloads=True).new_page()
        page.set_default_timeout(30_000)

        page.goto(console.url + "/")
        assert "/login" in page.url
        page.fill("input[name=name]", "admin")
        page.fill("input[name=password]", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(console.url + "/")

        page.click("text=New configuration")
        page.fill("input[name=name]", "console-minimal")
        page.fill("textarea[name=recipe]", RECIPE)
        page.fill("input[name=message]", "first version")
        page.click("text=Check and save")
        page.wait_for_url(console.url + "/configurations/console-minimal")

        page.click("#build-button")
        page.wait_for_url("**/builds/*")
        build_url = page.url
        # the log streams while the build runs
        page.wait_for_function(
            "document.getElementById('log').textContent.includes('==> bootstrap')", timeout=120_000
        )
        assert page.locator("#state .state").inner_text() in ("running", "succeeded")
        page.screenshot(path=str(tmp_path / "running.png"))
        page.wait_for_selector("#state .state-succeeded, #state .state-failed", timeout=600_000)
        page.wait_for_timeout(1500)  # the page reloads itself to show the artifacts
        page.goto(build_url)
        if page.locator("#failure").count():
            pytest.fail("the build failed:\n" + page.locator("#failure").inner_text())
        assert page.locator("#state .state").inner_text() == "succeeded"
        # Each step ran or came from the step cache (earlier runs may have made them).
        assert page.locator("#steps li.step-done, #steps li.step-cached").count() >= 5
        page.screenshot(path=str(tmp_path / "succeeded.png"), full_page=True)

        row = page.locator("#artifacts tbody tr").first
        shown_sha = row.locator("code.sha").inner_text().strip()
        with page.expect_download() as download_info:
            row.locator("a.artifact").click()
        download = download_info.value
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        assert saved.name.startswith("console-minimal")
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == shown_sha

        page.click("#manifest-link")
        page.wait_for_url("**/manifest")
        assert "ca-certificates" in page.locator("#package-table").inner_text()
        assert page.locator("h2#packages").count() == 1
        page.fill("#package-filter", "ca-cert")
        assert page.locator("#package-table tbody tr:visible").count() >= 1
        page.screenshot(path=str(tmp_path / "manifest.png"), full_page=True)
        browser.close()
