"""Organisations, their members, operators and API tokens: what the UI, API and CLI may change."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import Count, QuerySet
from django.utils import timezone

from hafen import crypto
from hafen.access import audit, policy
from hafen.access.models import ApiToken, Membership, Organisation, Role, Scope
from hafen.access.policy import Action, Actor
from hafen.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from hafen.labels import parse_changes

_SLUG = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
_USERNAME = re.compile(r"^[A-Za-z0-9_.@+-]{2,150}$")
TOKEN_PREFIX = "hfn_"


@dataclass(frozen=True)
class NewAccount:
    membership: Membership
    password: str | None  # set when the account was created here; shown once


def list_organisations(actor: Actor) -> QuerySet[Organisation]:
    return Organisation.objects.filter(policy.organisation_filter(actor))


def organisations_with_counts(actor: Actor) -> QuerySet[Any]:
    """The organisations the actor sees, each with `member_count` and `instance_count` (for lists; typed
    loosely: the annotations are not attributes of the model)."""
    return list_organisations(actor).annotate(
        member_count=Count("memberships", distinct=True), instance_count=Count("instances", distinct=True))


def get_organisation(actor: Actor, slug: str, action: Action = Action.VIEW) -> Organisation:
    organisation = list_organisations(actor).filter(slug=slug).first()
    if organisation is None:
        raise NotFound(f"no organisation {slug!r}")
    policy.check(actor, action, organisation.id, f"organisation {slug!r}")
    return organisation


def create_organisation(actor: Actor, slug: str, name: str = "") -> Organisation:
    with audit.audited(actor, "create-organisation", organisation=slug) as note:
        if not actor.is_operator:
            raise Forbidden("only operators create organisations")
        policy.check(actor, Action.MANAGE_ORGANISATIONS, None, "organisation")  # a read-scope token may not
        if not isinstance(slug, str) or not _SLUG.fullmatch(slug) or "--" in slug:
            raise InvalidInput(f"invalid organisation {slug!r}: use 3 to 32 lowercase letters, digits and hyphens")
        name = " ".join(str(name or slug).split())[:100]
        try:
            with transaction.atomic():
                organisation = Organisation.objects.create(slug=slug, name=name)
        except IntegrityError:
            raise Conflict(f"an organisation {slug!r} exists already") from None
        note.organisation_id = organisation.id
        return organisation


def describe_organisation(organisation: Organisation) -> dict[str, Any]:
    return {"slug": organisation.slug, "name": organisation.name, "node_labels": dict(organisation.node_labels or {}),
            "created_at": organisation.created_at.isoformat(),
            "alert_webhook": webhook_display(alert_webhook(organisation))}


def alert_webhook(organisation: Organisation) -> str:
    """The organisation's alert webhook in clear ("" for none)."""
    return crypto.decrypt(organisation.alert_webhook) if organisation.alert_webhook else ""


def webhook_display(url: str) -> str:
    """A webhook as users see it: its host, never the path or query that carry its token."""
    if not url:
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}/…"


def set_alert_webhook(actor: Actor, slug: str, url: str) -> Organisation:
    """Where the alerts about the organisation's instances are posted too ("" = nowhere): operators and the
    organisation's admins. The URL is kept encrypted and shown by its host only."""
    url = url.strip()
    with audit.audited(actor, "alert-webhook", organisation=slug, webhook=webhook_display(url)) as note:
        organisation = get_organisation(actor, slug)  # outsiders: not found
        note.organisation_id = organisation.id
        policy.check(actor, Action.UPDATE, organisation.id, f"organisation {slug!r}")
        if url:
            try:
                URLValidator(schemes=["http", "https"])(url)
            except ValidationError as exc:
                raise InvalidInput("the webhook must be an http:// or https:// URL") from exc
        organisation.alert_webhook = crypto.encrypt(url) if url else ""
        organisation.save(update_fields=["alert_webhook"])
        return organisation


def set_node_labels(actor: Actor, slug: str, changes: list[str]) -> Organisation:
    """Set (KEY=VALUE) or remove (KEY-) the labels a node must carry to take the organisation's new instances.

    Operators only: the labels choose the machines a customer's data lives on. Instances placed already
    stay where they are; the labels apply to the next ones (and to a move's new node).
    """
    with audit.audited(actor, "label-organisation", organisation=slug, changes=list(changes)) as note:
        organisation = get_organisation(actor, slug)  # outsiders: not found
        note.organisation_id = organisation.id
        if not actor.is_operator:
            raise Forbidden("only operators set an organisation's node labels")
        policy.check(actor, Action.MANAGE_ORGANISATIONS, organisation.id, f"organisation {slug!r}")  # read scope
        set_, remove = parse_changes(list(changes))
        with transaction.atomic():
            organisation = Organisation.objects.select_for_update().get(pk=organisation.pk)
            current = organisation.node_labels or {}
            organisation.node_labels = {k: v for k, v in current.items() if k not in remove} | set_
            organisation.save(update_fields=["node_labels"])
        note.detail.update(before=current, after=organisation.node_labels)
        return organisation


def members(actor: Actor, slug: str) -> QuerySet[Membership]:
    organisation = get_organisation(actor, slug)
    return organisation.memberships.select_related("user")


def _role(value: str) -> Role:
    if value not in Role.values:
        raise InvalidInput(f"unknown role {value!r}; roles: {', '.join(Role.values)}")
    return Role(value)


def add_member(actor: Actor, slug: str, username: str, role: str = Role.MEMBER, can_read_credentials: bool = False,
               email: str = "") -> NewAccount:
    """Add a person to an organisation, creating the account (with a generated password) if it is new.

    Only operators may add an account that exists already, so that an admin
    cannot probe for or pull in people of other organisations.
    """
    with audit.audited(actor, "add-member", organisation=slug, username=username, role=role) as note:
        organisation = get_organisation(actor, slug, Action.MANAGE_MEMBERS)
        note.organisation_id = organisation.id
        chosen = _role(role)
        if not isinstance(username, str) or not _USERNAME.fullmatch(username):
            raise InvalidInput("a user name has 2 to 150 letters, digits and @.+-_")
        password = None
        with transaction.atomic():
            user = User.objects.filter(username=username).first()
            if user is None:
                password = crypto.generate_password()
                user = User.objects.create_user(username=username, email=email or "", password=password)
            elif not actor.is_operator:
                raise Conflict(f"the user name {username!r} is taken; choose another")
            if Membership.objects.filter(user=user, organisation=organisation).exists():
                raise Conflict(f"{username} is a member of {slug} already")
            membership = Membership.objects.create(
                user=user, organisation=organisation, role=chosen, can_read_credentials=bool(can_read_credentials)
            )
        return NewAccount(membership, password)


def _membership(organisation: Organisation, username: str) -> Membership:
    membership = organisation.memberships.select_related("user").filter(user__username=username).first()
    if membership is None:
        raise NotFound(f"{username!r} is not a member of {organisation.slug}")
    return membership


def _keep_an_admin(actor: Actor, membership: Membership) -> None:
    others = membership.organisation.memberships.filter(role=Role.ADMIN).exclude(pk=membership.pk)
    if membership.role == Role.ADMIN and not others.exists() and not actor.is_operator:
        raise Conflict(f"{membership.user.get_username()} is the last admin of {membership.organisation.slug}")


def change_member(actor: Actor, slug: str, username: str, role: str | None = None,
                  can_read_credentials: bool | None = None) -> Membership:
    with audit.audited(actor, "change-member", organisation=slug, username=username, role=role,
                       can_read_credentials=can_read_credentials) as note:
        organisation = get_organisation(actor, slug, Action.MANAGE_MEMBERS)
        note.organisation_id = organisation.id
        membership = _membership(organisation, username)
        if role is not None:
            chosen = _role(role)
            if chosen != Role.ADMIN:
                _keep_an_admin(actor, membership)
            membership.role = chosen
        if can_read_credentials is not None:
            membership.can_read_credentials = bool(can_read_credentials)
        membership.save()
        return membership


def remove_member(actor: Actor, slug: str, username: str) -> None:
    with audit.audited(actor, "remove-member", organisation=slug, username=username) as note:
        organisation = get_organisation(actor, slug, Action.MANAGE_MEMBERS)
        note.organisation_id = organisation.id
        membership = _membership(organisation, username)
        _keep_an_admin(actor, membership)
        membership.delete()


def ensure_operator(username: str, password: str | None = None) -> str | None:
    """Make `username` an operator; return its new generated password if the account was created."""
    user = User.objects.filter(username=username).first()
    if user is not None:
        if not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        return None
    password = password or crypto.generate_password()
    User.objects.create_user(username=username, password=password, is_staff=True)
    audit.record(Actor.local(), "add-operator", audit.Result.OK, detail={"username": username})
    return password


def set_password(username: str) -> str:
    """A new generated password for a user, from the local CLI."""
    user = User.objects.filter(username=username).first()
    if user is None:
        raise NotFound(f"no user {username!r}")
    password = crypto.generate_password()
    user.set_password(password)
    user.save(update_fields=["password"])
    audit.record(Actor.local(), "set-password", audit.Result.OK, detail={"username": username})
    return password


def has_operator() -> bool:
    return User.objects.filter(is_staff=True, is_active=True).exists()


# -- API tokens -----------------------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(actor: Actor, name: str, scope: str = Scope.READ) -> tuple[ApiToken, str]:
    """A new token for the actor's own user; the token itself is returned once and never stored."""
    with audit.audited(actor, "create-token", name=name, scope=scope):
        if actor.user is None:
            raise InvalidInput("tokens belong to users; the local CLI needs none")
        if actor.scope != Scope.WRITE:
            raise Forbidden("a token of read scope cannot create tokens")
        if scope not in Scope.values:
            raise InvalidInput(f"unknown scope {scope!r}; scopes: {', '.join(Scope.values)}")
        name = " ".join(str(name).split())[:64]
        if not name:
            raise InvalidInput("give the token a name")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = ApiToken.objects.create(user=actor.user, name=name, scope=scope, prefix=token[:10],
                                         digest=_digest(token))
        return record, token


def create_token_for(username: str, name: str, scope: str) -> str:
    """A token for a user, made by the local CLI (that is how the first token comes to be)."""
    user = User.objects.filter(username=username, is_active=True).first()
    if user is None:
        raise NotFound(f"no user {username!r}")
    return create_token(Actor(user=user, via="cli", source="local"), name, scope)[1]


def tokens(actor: Actor) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=actor.user) if actor.user is not None else ApiToken.objects.none()


def revoke_token(actor: Actor, token_id: int) -> None:
    with audit.audited(actor, "revoke-token", token=token_id):
        found = tokens(actor).filter(pk=token_id, revoked_at=None).first()
        if found is None:
            raise NotFound(f"no active token {token_id}")
        found.revoked_at = timezone.now()
        found.save(update_fields=["revoked_at"])


def authenticate_token(token: str) -> ApiToken:
    """The active token with this value, its user active; raises Unauthenticated otherwise."""
    found = ApiToken.objects.select_related("user").filter(digest=_digest(token), revoked_at=None).first()
    if found is None or not found.user.is_active:
        raise Unauthenticated("the token is unknown or revoked")
    now = timezone.now()
    if found.last_used_at is None or (now - found.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=found.pk).update(last_used_at=now)
    return found
