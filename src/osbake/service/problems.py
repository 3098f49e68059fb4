"""The one error format of the console, the statuses it uses, and what OpenAPI says of them.

Every refusal, whatever raised it (an osbake error, FastAPI's request
validation, Starlette's routing, the body-size limit, the database), is answered
with the same JSON body on the API and with the same facts on an HTML page:

    {"error": what, "hint": how to fix it, "location": where, "detail": all of it}
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy.exc import DataError, IntegrityError, StatementError
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute

from osbake.errors import HostError, Location, OsbakeError, UsageError

log = logging.getLogger("osbake.service")


class NotFound(UsageError):
    """No such thing."""


class Conflict(UsageError):
    """The request does not fit the state of what it names."""

    exit_code = 2


class Forbidden(UsageError):
    """This credential may not do that."""


class TooLarge(UsageError):
    """The request body is too large."""


class Problem(BaseModel):
    """The body of every error answer."""

    error: str
    hint: str | None = None
    location: str | None = None
    detail: str


DESCRIPTIONS = {
    401: "No credential, or one that is not valid (mistyped, expired, revoked, logged out)",
    403: "The credential's role does not allow this (or the CSRF token is missing)",
    404: "No such configuration, version, build, file, token or schedule",
    409: "Not in this state (e.g. cancel a finished build, report on a build not claimed)",
    413: "The request body is larger than this route accepts",
    415: "The request body is content-encoded (send it plain)",
    422: "Bad input: the field, parameter or file named in 'location' and how to fix it",
}


def status_for(exc: OsbakeError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, HostError):
        return 500  # the console's host lacks something: not the caller's fault
    return 422  # bad input: recipe, elements, request


def body(
    message: str, hint: str | None = None, location: str | None = None, detail: str | None = None
) -> dict[str, Any]:
    text = detail or (f"{location}: {message}" if location else message)
    if hint and not detail:
        text += f"\n  hint: {hint}"
    return {"error": message, "hint": hint, "location": location, "detail": text}


def error_body(exc: OsbakeError) -> dict[str, Any]:
    location = str(exc.location) if exc.location else None
    return body(exc.message, exc.hint, location, exc.render())


def wants_json(request: Request) -> bool:
    """API calls, documents and assets get JSON errors; pages get an HTML page."""
    path = request.url.path
    return path.startswith(("/api/", "/static/", "/docs-assets/")) or path in (
        "/openapi.json",
        "/api",
    )


def _validation_problem(exc: RequestValidationError) -> UsageError:
    errors = list(exc.errors())
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    first = errors[0] if errors else {}
    key = ".".join(str(p) for p in first.get("loc", ())) or None
    message = "invalid request: " + "; ".join(parts) if parts else "invalid request"
    return UsageError(
        message,
        location=Location(key=key) if key else None,
        hint="see /docs for the fields and parameters of this route",
    )


def install(app: FastAPI, page: Any, login: Callable[[Request], Response]) -> None:
    """Register the handlers: `page(request, error, status)` renders the HTML form,
    `login(request)` sends a browser without a credential to the log-in page."""

    def answer(request: Request, exc: OsbakeError, status: int, headers: Any = None) -> Response:
        if wants_json(request):
            return JSONResponse(error_body(exc), status_code=status, headers=headers)
        if status == 401:
            return login(request)
        response: Response = page(request, exc, status)
        return response

    @app.exception_handler(OsbakeError)
    async def osbake_error(request: Request, exc: OsbakeError) -> Response:
        return answer(request, exc, status_for(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400:  # FastAPI's "error parsing the body": bad input, like the rest
            problem = UsageError(
                "the request body cannot be read (not valid JSON, UTF-8 or form data)",
                hint="send the body in the content type the route documents",
            )
            return answer(request, problem, 422)
        return answer(request, UsageError(str(exc.detail)), exc.status_code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return answer(request, _validation_problem(exc), 422)

    @app.exception_handler(DataError)
    @app.exception_handler(StatementError)
    async def database_refused(request: Request, exc: Exception) -> Response:
        # A value the database cannot store or compare (out of range, NUL characters):
        # bad input that got past the models' own checks.
        if (
            isinstance(exc, StatementError)
            and not isinstance(exc, DataError | IntegrityError)
            and not isinstance(getattr(exc, "orig", None), ValueError | OverflowError)
        ):
            log.exception("database error")
            return answer(request, UsageError("the console could not do this"), 500)
        return answer(
            request,
            UsageError(
                "a value in the request is out of range or has characters "
                "the database cannot store",
                hint="check numbers (ids are below 2^31) and remove control characters",
            ),
            422,
        )

    @app.exception_handler(IntegrityError)
    async def integrity(request: Request, exc: IntegrityError) -> Response:
        return answer(
            request,
            Conflict("this conflicts with something that exists already (try again)"),
            409,
        )

    @app.exception_handler(OverflowError)
    async def overflow(request: Request, exc: OverflowError) -> Response:
        return answer(request, UsageError("a number in the request is out of range"), 422)


def document(routes: list[BaseRoute]) -> None:
    """Put the error answers each API route really gives into the OpenAPI document.

    401 and 403 for every route that needs a credential, 413 and 415 for every
    route with a body, 422 for every route with parameters or a body, 404 for
    every route with ids or names in its path; routes add what else they give
    (409, a 404 without path parameters) with `responses=errors(...)`.
    """
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        codes: set[int] = set()
        dependant = route.dependant
        if _needs_credential(dependant):
            codes |= {401, 403}
        has_body = bool(dependant.body_params) or bool(
            (route.methods or set()) & {"POST", "PUT", "PATCH"}
        )
        if has_body:
            codes |= {413, 415}
        if dependant.path_params:
            codes |= {404, 422}
        if dependant.query_params or dependant.body_params or dependant.header_params:
            codes.add(422)
        for code in sorted(codes):
            route.responses.setdefault(code, errors(code)[code])


def _needs_credential(dependant: Any) -> bool:
    for sub in dependant.dependencies:
        if getattr(sub.call, "osbake_role", None) is not None or _needs_credential(sub):
            return True
    return False


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses: the one error body, always JSON
    (also on routes whose own answer is text or a file)."""
    schema = Problem.model_json_schema()
    return {
        code: {
            "description": DESCRIPTIONS[code],
            "content": {"application/json": {"schema": schema}},
        }
        for code in codes
    }
