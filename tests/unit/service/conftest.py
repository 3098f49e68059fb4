"""A console on a temporary SQLite database with a queue that only records, no workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from osbake.service.app import create_app
from osbake.service.config import ServiceSettings
from osbake.service.queue import ListQueue
from tests.unit.service.service_harness import Harness


@pytest.fixture
def settings(tmp_path: Path) -> ServiceSettings:
    return ServiceSettings.create(tmp_path / "data", queue_url="memory://", heartbeat_timeout=30)


@pytest.fixture
def harness(settings: ServiceSettings) -> Iterator[Harness]:
    app = create_app(settings, queue=ListQueue(), background=False)
    with TestClient(app) as client:
        yield Harness(app, client)
