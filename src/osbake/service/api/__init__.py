"""The REST API (/api): everything the web page can do, for scripts and workers.

One router per OpenAPI tag. Routes are thin: they check who asks (osbake.service.deps),
parse the request and call the services in configs, builds, schedules and retention.
"""

from __future__ import annotations

from fastapi import APIRouter

from osbake.service.api import (
    access,
    artifacts,
    builds,
    configurations,
    console,
    releases,
    retention,
    schedules,
    workers,
)

# In the order the console matches them (and the OpenAPI document lists them).
ROUTERS: tuple[APIRouter, ...] = (
    console.router,
    access.router,
    configurations.router,
    schedules.router,
    builds.router,
    artifacts.router,
    retention.router,
    releases.router,
    workers.router,
)
