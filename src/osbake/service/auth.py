"""Users, passwords, API tokens, log-in sessions and the one rule of who may do what.

Passwords are hashed with scrypt (Python's hashlib; no extra dependency); API
tokens and session secrets are random strings of which only the sha256 is stored.
Authorization always follows the credential that makes the request: its role,
never the role of whoever made it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from osbake.errors import UsageError
from osbake.service.models import Role, Token, User, WebSession, now
from osbake.service.problems import Conflict, Forbidden

RANK = {Role.VIEWER: 1, Role.BUILDER: 2, Role.ADMIN: 3}
TOKEN_PREFIX = "osb_"
SESSION_SECONDS = 7 * 24 * 3600
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MAX_PASSWORD = 1024


def allows(role: str, required: Role) -> bool:
    """Whether a credential of `role` may do what needs `required`.

    Workers may only work, and only workers work: an admin token cannot report
    on a build (that is what a worker token, bound to the build it claimed, is for).
    """
    if Role.WORKER in (required, role):
        return role == required
    try:
        return RANK[Role(role)] >= RANK[required]
    except (ValueError, KeyError):
        return False


def may_grant(granter: str, role: Role) -> bool:
    """Whether a credential of role `granter` may make a token or user of `role`.

    Nobody makes a credential with more rights than their own; only admins make
    worker tokens; workers make nothing.
    """
    if granter == Role.WORKER:
        return False
    if role == Role.WORKER:
        return granter == Role.ADMIN
    return allows(granter, role)


def check_grant(granter: str, role: Role) -> None:
    if not may_grant(granter, role):
        raise Forbidden(
            f"a {granter} credential cannot make a {role} credential",
            hint="nobody makes a credential with more rights than their own; "
            "only admins make worker tokens",
        )


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt" or len(password) > MAX_PASSWORD:
        return False
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1)
    return hmac.compare_digest(candidate.hex(), digest)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise UsageError(
            f"'{text}' is not a role", hint="roles: viewer, builder, admin, worker (tokens only)"
        ) from None


def has_users(session: Session) -> bool:
    return (session.scalar(select(func.count(User.id))) or 0) > 0


def create_user(session: Session, name: str, password: str, role: Role) -> User:
    if role == Role.WORKER:
        raise UsageError("'worker' is a role for tokens, not for people", hint="use a token")
    if not USER_NAME.fullmatch(name):
        raise UsageError(
            f"'{name[:80]}' is not a user name",
            hint="1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
        )
    if len(password) < 8 or len(password) > MAX_PASSWORD:
        raise UsageError(
            "the password must have 8 to 1024 characters", hint="use at least 8 characters"
        )
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise Conflict(f"a user named '{name}' exists already", hint="choose another name")
    user = User(name=name, password_hash=hash_password(password), role=str(role))
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, name: str, password: str) -> User | None:
    if not USER_NAME.fullmatch(name):
        return None
    user = session.scalar(select(User).where(User.name == name))
    if user is None or not check_password(password, user.password_hash):
        return None
    return user


def create_token(
    session: Session,
    name: str,
    role: Role,
    *,
    granter: str,
    user_id: int | None = None,
    created_by: str = "",
    expires: float | None = None,
) -> tuple[Token, str]:
    """A new token; the secret is returned once and never stored.

    `granter` is the role of the credential that asks (the console itself passes
    admin for its own worker); `check_grant` applies.
    """
    check_grant(granter, role)
    if expires is not None and expires <= now():
        raise UsageError("the token would have expired already", hint="give a later expiry")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = Token(
        name=name or "token",
        digest=token_digest(secret),
        role=str(role),
        user_id=user_id,
        created_by=created_by[:160],
        expires=expires,
    )
    session.add(token)
    session.flush()
    return token, secret


def lookup_token(session: Session, secret: str) -> Token | None:
    """The token with this secret, valid or not (the caller says why it is refused)."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    return session.scalar(select(Token).where(Token.digest == token_digest(secret)))


def revoke_token(token: Token) -> None:
    if token.revoked is None:
        token.revoked = now()


# -- log-in sessions ------------------------------------------------------------------------


def open_session(session: Session, user: User) -> str:
    """A new log-in for `user`; returns the secret the cookie carries."""
    secret = secrets.token_urlsafe(32)
    session.execute(delete(WebSession).where(WebSession.expires <= now()))
    session.add(
        WebSession(digest=token_digest(secret), user_id=user.id, expires=now() + SESSION_SECONDS)
    )
    session.flush()
    return secret


def session_user(session: Session, secret: str) -> User | None:
    """The user of a live log-in (None once logged out or expired)."""
    if not isinstance(secret, str) or len(secret) > 200:
        return None
    row = session.scalar(select(WebSession).where(WebSession.digest == token_digest(secret)))
    if row is None or row.expires <= now():
        return None
    return session.get(User, row.user_id)


def close_session(session: Session, secret: str) -> None:
    session.execute(delete(WebSession).where(WebSession.digest == token_digest(secret)))
    session.flush()
