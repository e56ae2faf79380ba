"""Who may sign in at all, and who may open which workspace.

Sign-in: an address in ``allowed_emails``, a verified address in one of ``allowed_domains``, or a
member of one of ``allowed_groups`` (read from ``groups_claim``). A workspace's ``owners`` are
addresses and ``group:NAME`` entries; a workspace without owners is open to everyone signed in.
``admins`` ([auth]) are read the same way, except that none means nobody: the dashboard and the
control API from a browser are never open to everyone by omission.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .config import AuthConfig
from .errors import SignInRefused
from .sessions import Session

__all__ = ["GROUP_PREFIX", "admitted_identity", "is_admin", "may_open"]

GROUP_PREFIX = "group:"


def _groups(claims: Mapping[str, Any], claim: str) -> frozenset[str]:
    value = claims.get(claim, ())
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list | tuple):
        return frozenset()
    return frozenset(str(g).lower() for g in value)


def admitted_identity(auth: AuthConfig, claims: Mapping[str, Any]) -> tuple[str, frozenset[str]]:
    """The (email, groups) a session is made of; SignInRefused("not_allowed", ...) else."""
    email = claims.get("email")
    groups = _groups(claims, auth.groups_claim)
    if not isinstance(email, str) or "@" not in email:
        raise SignInRefused("no_email", "the provider gave no e-mail address (scope email?)")
    email = email.lower()
    verified = claims.get("email_verified") is True
    domain = email.rpartition("@")[2]
    if (
        email in auth.allowed_emails
        or (verified and domain in auth.allowed_domains)
        or not groups.isdisjoint(auth.allowed_groups)
    ):
        return email, groups
    raise SignInRefused("not_allowed", f"{email} may not sign in here")


def _named(session: Session, entry: str) -> bool:
    return entry == session.email or (
        entry.startswith(GROUP_PREFIX) and entry[len(GROUP_PREFIX) :] in session.groups
    )


def may_open(session: Session, owners: Iterable[str]) -> bool:
    """Whether the session's user owns the workspace (no owners: everyone signed in does)."""
    anyone = True
    for owner in owners:
        anyone = False
        if _named(session, owner):
            return True
    return anyone


def is_admin(session: Session, admins: Iterable[str]) -> bool:
    """Whether the session's user is one of ``admins`` (none: nobody is)."""
    return any(_named(session, entry) for entry in admins)
