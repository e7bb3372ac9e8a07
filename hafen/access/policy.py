"""The one place that decides who may do what.

The CLI, the API and the UI all pass an `Actor` to the service layer, which
asks this module before it reads or changes anything. An instance of an
organisation the actor does not belong to is reported as not found, never as
forbidden, so that its existence does not leak.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any

from django.db.models import Q

from hafen.access.models import Membership, Role, Scope
from hafen.errors import Forbidden, NotFound


class Action(StrEnum):
    VIEW = "view"
    CREATE = "create"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    SCALE = "scale"
    PASSWD = "passwd"
    DELETE = "delete"
    ERASE = "erase"
    UPDATE = "update"
    BACKUP = "backup"
    RESTORE = "restore"
    CREDENTIALS = "credentials"
    LOGS = "logs"
    LOCK = "lock"
    POLICY = "policy"  # the instance's elastic-capacity policy (when it sleeps)
    MANAGE_MEMBERS = "manage-members"
    MANAGE_ORGANISATIONS = "manage-organisations"


# Actions a lock may refuse, as the operator or admin chooses.
LOCKABLE = (Action.ERASE, Action.DELETE, Action.UPDATE, Action.STOP, Action.SCALE, Action.RESTORE)
# What a token of read scope may do: nothing that changes state, and no reveal of credentials
# (a write-level act, audited as one).
READ_SCOPE = frozenset({Action.VIEW, Action.LOGS})
MEMBER = frozenset({Action.VIEW, Action.LOGS, Action.START, Action.STOP})
ADMIN = frozenset(Action) - {Action.MANAGE_ORGANISATIONS}


@dataclass(frozen=True)
class Actor:
    """Who asks, and through what: a user of the UI or API, or the local CLI.

    The local CLI runs as the owner of the data directory and its key, so it
    acts as an operator; locks still apply to it.
    """

    user: Any = None
    via: str = "cli"
    source: str = ""
    scope: str = Scope.WRITE
    local_name: str = ""

    @classmethod
    def local(cls) -> Actor:
        return cls(via="cli", source="local", local_name=getpass.getuser())

    @property
    def name(self) -> str:
        return self.user.get_username() if self.user is not None else f"{self.local_name} (local)"

    @property
    def is_operator(self) -> bool:
        if self.user is None:
            return True
        return bool(self.user.is_active and self.user.is_staff)

    def memberships(self) -> dict[int, Membership]:
        return self._memberships

    @cached_property
    def _memberships(self) -> dict[int, Membership]:
        """Read once per actor, which lives for one request (or one CLI command)."""
        if self.user is None or not self.user.is_active:
            return {}
        return {m.organisation_id: m for m in Membership.objects.filter(user=self.user)}


def actions(actor: Actor, organisation_id: int | None, memberships: dict[int, Membership] | None = None
            ) -> frozenset[Action]:
    """What the actor may do to something of this organisation (None: an operator's own)."""
    if actor.is_operator:
        allowed = frozenset(Action)
    else:
        membership = (memberships if memberships is not None else actor.memberships()).get(organisation_id or -1)
        if membership is None:
            return frozenset()
        if membership.role == Role.ADMIN:
            allowed = ADMIN
        else:
            allowed = MEMBER | ({Action.CREDENTIALS} if membership.can_read_credentials else set())
    return allowed & READ_SCOPE if actor.scope == Scope.READ else allowed


def instance_filter(actor: Actor) -> Q:
    """A filter of the instances (or operations, by their `organisation`) the actor may see."""
    if actor.is_operator:
        return Q()
    return Q(organisation_id__in=list(actor.memberships()))


def organisation_filter(actor: Actor) -> Q:
    if actor.is_operator:
        return Q()
    return Q(id__in=list(actor.memberships()))


def check(actor: Actor, action: Action, organisation_id: int | None, what: str) -> None:
    """Raise unless the actor may do `action`; NotFound when it may not even see `what`."""
    if not actor.is_operator and organisation_id not in actor.memberships():
        raise NotFound(f"no {what}")
    allowed = actions(actor, organisation_id)
    if action not in allowed:
        if actor.scope == Scope.READ and action not in READ_SCOPE:
            raise Forbidden(f"this token has read scope; {action} needs a token of write scope")
        raise Forbidden(f"your role does not allow {action} on {what}")
