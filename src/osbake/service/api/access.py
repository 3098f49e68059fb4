"""Users and API tokens."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from osbake.service import auth, views
from osbake.service.deps import Account, Admin, Id, Principal, SessionDep, Short
from osbake.service.models import Role, Token, User, now
from osbake.service.problems import NotFound, errors

router = APIRouter(prefix="/api", tags=["access"])


class TokenRequest(BaseModel):
    name: Short = "token"
    role: Literal["viewer", "builder", "admin", "worker"] = "viewer"
    expires_days: int | None = Field(
        None, ge=1, le=3650, description="days until the token expires (default: never)"
    )


def token_json(token: Token) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "role": token.role,
        "created": views.iso(token.created),
        "created_by": token.created_by,
        "expires": views.iso(token.expires),
        "revoked": views.iso(token.revoked),
        "last_used": views.iso(token.last_used),
        "valid": token.valid(),
    }


def owns(who: Principal, token: Token) -> bool:
    """Admins see every token; others their own user's tokens, and a token itself."""
    if who.allows(Role.ADMIN):
        return True
    if who.token_id is not None and who.token_id == token.id:
        return True
    return who.user_id is not None and token.user_id == who.user_id


@router.post("/tokens", status_code=201)
def create_token(body: TokenRequest, session: SessionDep, who: Account) -> dict[str, Any]:
    """Make an API token (the secret is shown once).

    Nobody makes a token with more rights than the credential that asks for it;
    only admins make worker tokens. The token belongs to the asker's user.
    """
    expires = now() + body.expires_days * 86400 if body.expires_days else None
    token, secret = auth.create_token(
        session,
        body.name,
        Role(body.role),
        granter=who.role,
        user_id=who.user_id,
        created_by=who.name,
        expires=expires,
    )
    session.commit()
    return {**token_json(token), "token": secret}


@router.get("/tokens")
def list_tokens(session: SessionDep, who: Account) -> list[dict[str, Any]]:
    """Tokens with their expiry and state: an admin sees all, others their own."""
    return [
        token_json(t)
        for t in session.scalars(select(Token).order_by(Token.id)).all()
        if owns(who, t)
    ]


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: Id, session: SessionDep, who: Account) -> Response:
    """Revoke a token at once (an admin any, others their own)."""
    token = session.get(Token, token_id)
    if token is None or not owns(who, token):
        raise NotFound(f"there is no token {token_id} of yours")
    auth.revoke_token(token)
    session.commit()
    return Response(status_code=204)


class UserRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=auth.USER_NAME.pattern)
    password: str = Field(min_length=8, max_length=auth.MAX_PASSWORD)
    role: Literal["viewer", "builder", "admin"] = "viewer"


@router.post("/users", status_code=201, responses=errors(409))
def create_user(body: UserRequest, session: SessionDep, who: Admin) -> dict[str, Any]:
    auth.check_grant(who.role, Role(body.role))
    user = auth.create_user(session, body.name, body.password, Role(body.role))
    session.commit()
    return {"id": user.id, "name": user.name, "role": user.role}


@router.get("/users")
def list_users(session: SessionDep, who: Admin) -> list[dict[str, Any]]:
    return [
        {"id": u.id, "name": u.name, "role": u.role}
        for u in session.scalars(select(User).order_by(User.id)).all()
    ]
