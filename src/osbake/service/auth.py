"""Users, passwords, API tokens and roles.

Passwords are hashed with scrypt (Python's hashlib; no extra dependency); API
tokens are random strings of which only the sha256 is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from osbake.errors import UsageError
from osbake.service.models import Role, Token, User, now

RANK = {Role.VIEWER: 1, Role.BUILDER: 2, Role.ADMIN: 3}
TOKEN_PREFIX = "osb_"


def allows(role: str, required: Role) -> bool:
    """Whether `role` may do what needs `required` (workers may only work)."""
    if required == Role.WORKER:
        return role in (Role.WORKER, Role.ADMIN)
    if role == Role.WORKER:
        return False
    return RANK.get(Role(role), 0) >= RANK[required]


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
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
    if not name or len(name) > 64:
        raise UsageError("a user name must have 1 to 64 characters")
    if len(password) < 8:
        raise UsageError("the password is too short", hint="use at least 8 characters")
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise UsageError(f"a user named '{name}' exists already")
    user = User(name=name, password_hash=hash_password(password), role=str(role))
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, name: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.name == name))
    if user is None or not check_password(password, user.password_hash):
        return None
    return user


def create_token(session: Session, name: str, role: Role, user: User | None) -> tuple[Token, str]:
    """A new token; the secret is returned once and never stored."""
    if user is not None and role != Role.WORKER and RANK[role] > RANK[Role(user.role)]:
        raise UsageError(
            f"a {user.role} cannot make a token with more rights ({role})",
            hint="ask an admin for that token",
        )
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = Token(
        name=name or "token",
        digest=token_digest(secret),
        role=str(role),
        user_id=user.id if user else None,
    )
    session.add(token)
    session.flush()
    return token, secret


def lookup_token(session: Session, secret: str) -> Token | None:
    token = session.scalar(select(Token).where(Token.digest == token_digest(secret)))
    if token is not None:
        token.last_used = now()
    return token
