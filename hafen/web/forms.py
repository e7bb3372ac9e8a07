"""Forms of the UI. They only convert input; the service layer validates it and says what is wrong."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import forms

from hafen.access import policy
from hafen.access import services as access
from hafen.access.models import Result, Role, Scope
from hafen.access.policy import LOCKABLE, Action, Actor
from hafen.catalog import SIZES, apps
from hafen.instances import services
from hafen.instances.models import State

Choices = list[tuple[str, str]]
NO_ORGANISATION = ("", "none (operators' own)")


def _with_any(what: str, choices: Choices) -> Choices:
    return [("", f"any {what}"), *choices]


def _raw(data: Mapping[str, Any], *keys: str) -> dict[str, str]:
    """Filter values as given: the service layer filters within what the actor may see, so an
    unknown value finds nothing rather than being dropped and widening the result."""
    return {key: str(data.get(key, "")).strip()[:150] for key in keys}


def _choices(form: forms.Form, name: str, choices: Choices) -> None:
    field = form.fields[name]
    assert isinstance(field, forms.ChoiceField)
    field.choices = choices


def visible_organisations(actor: Actor) -> Choices:
    return [(org.slug, org.name or org.slug) for org in access.list_organisations(actor)]


def creatable_organisations(actor: Actor) -> Choices:
    """Where the actor may create instances: for operators every organisation and none, for admins theirs."""
    choices = [(org.slug, org.name or org.slug) for org in services.creatable_organisations(actor)]
    return [NO_ORGANISATION, *choices] if actor.is_operator else choices


def updatable_organisations(actor: Actor) -> Choices:
    """Whose instances the actor may update in a rollout: for operators every organisation, or all at once."""
    memberships = actor.memberships()
    choices = [(org.slug, org.name or org.slug) for org in access.list_organisations(actor)
               if actor.is_operator or Action.UPDATE in policy.actions(actor, org.id, memberships)]
    return [("", "all (every organisation, and the operators' own)"), *choices] if actor.is_operator else choices


PAGE_SIZES = (100, 50, 500)  # the first is the default


class InstanceFilter(forms.Form):
    q = forms.CharField(required=False, label="Search", widget=forms.TextInput(attrs={"placeholder": "name or domain"}))
    state = forms.ChoiceField(required=False, choices=_with_any("state", list(State.choices)))
    app = forms.ChoiceField(required=False)
    organisation = forms.ChoiceField(required=False)
    per_page = forms.ChoiceField(required=False, choices=[(str(n), f"{n} per page") for n in PAGE_SIZES])

    def __init__(self, actor: Actor, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choices(self, "app", _with_any("app", [(name, app.title) for name, app in apps().items()]))
        _choices(self, "organisation", _with_any("organisation", visible_organisations(actor)))

    @staticmethod
    def filters(data: Mapping[str, Any]) -> dict[str, str]:
        return _raw(data, "q", "state", "app", "organisation")

    @staticmethod
    def page_size(data: Mapping[str, Any]) -> int:
        value = str(data.get("per_page", ""))
        return int(value) if value in {str(n) for n in PAGE_SIZES} else PAGE_SIZES[0]


class NewInstanceForm(forms.Form):
    name = forms.CharField(max_length=32, help_text="3 to 32 lowercase letters, digits and hyphens")
    app = forms.ChoiceField()
    version = forms.CharField(required=False, max_length=32, help_text="empty: the app's default version",
                              widget=forms.TextInput(attrs={"list": "versions", "placeholder": "default"}))
    domain = forms.CharField(required=False, max_length=253, help_text="empty: NAME under the default suffix")
    size = forms.ChoiceField(choices=[(size, size) for size in SIZES])
    organisation = forms.ChoiceField(required=False)

    def __init__(self, organisations: Choices, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choices(self, "app", [(name, app.title) for name, app in apps().items()])
        _choices(self, "organisation", organisations)

    @staticmethod
    def versions() -> list[tuple[str, list[str], str]]:
        return [(name, app.versions, app.default_version) for name, app in apps().items()]


class RolloutForm(forms.Form):
    app = forms.ChoiceField()
    version = forms.CharField(max_length=32, widget=forms.TextInput(attrs={"list": "versions"}),
                              help_text="the version to update the instances to")
    organisation = forms.ChoiceField(required=False)
    canary = forms.IntegerField(min_value=0, initial=1, widget=forms.NumberInput(attrs={"class": "short"}),
                                help_text="how many instances to update first, alone")
    canaries = forms.CharField(required=False, max_length=500, label="Canary instances",
                               help_text="names, separated by spaces; empty: the first by name")
    batch = forms.IntegerField(min_value=1, initial=1, widget=forms.NumberInput(attrs={"class": "short"}),
                               help_text="how many instances to update at once after the canaries")
    start_at = forms.DateTimeField(required=False, label="Start (UTC)",
                                   widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
                                   help_text="empty: now")

    def __init__(self, organisations: Choices, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choices(self, "app", [(name, app.title) for name, app in apps().items()])
        _choices(self, "organisation", organisations)

    @staticmethod
    def versions() -> list[tuple[str, list[str], str]]:
        return NewInstanceForm.versions()


class ScaleForm(forms.Form):
    replicas = forms.IntegerField(min_value=0)


class LockForm(forms.Form):
    actions = forms.MultipleChoiceField(choices=[(str(a), str(a)) for a in LOCKABLE],
                                        widget=forms.CheckboxSelectMultiple)
    reason = forms.CharField(max_length=200)


class BackupPolicyForm(forms.Form):
    schedule = forms.CharField(max_length=64, help_text="cron, in UTC: minute hour day month weekday")
    keep_daily = forms.IntegerField(min_value=0, max_value=10000, widget=forms.NumberInput(attrs={"class": "short"}))
    keep_weekly = forms.IntegerField(min_value=0, max_value=10000, widget=forms.NumberInput(attrs={"class": "short"}))
    keep_monthly = forms.IntegerField(min_value=0, max_value=10000, widget=forms.NumberInput(attrs={"class": "short"}))
    enabled = forms.BooleanField(required=False, label="scheduled backups on")


class NewInstanceFromBackupForm(forms.Form):
    """A restore into a new instance, or a clone: the new one's name and (optionally) domain."""

    new = forms.CharField(max_length=64)
    domain = forms.CharField(required=False, max_length=253)


class OrganisationForm(forms.Form):
    slug = forms.CharField(max_length=32, help_text="3 to 32 lowercase letters, digits and hyphens")
    name = forms.CharField(max_length=100, required=False)


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)
    can_read_credentials = forms.BooleanField(required=False, label="may reveal credentials")


class TokenForm(forms.Form):
    name = forms.CharField(max_length=64)
    scope = forms.ChoiceField(choices=Scope.choices, initial=Scope.READ)


class AuditFilter(forms.Form):
    instance = forms.CharField(required=False, max_length=32)
    action = forms.CharField(required=False, max_length=32)
    actor = forms.CharField(required=False, max_length=150)
    result = forms.ChoiceField(required=False, choices=_with_any("result", list(Result.choices)))
    organisation = forms.ChoiceField(required=False)

    def __init__(self, actor: Actor, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choices(self, "organisation", _with_any("organisation", visible_organisations(actor)))

    @staticmethod
    def filters(data: Mapping[str, Any]) -> dict[str, str]:
        found = _raw(data, "instance", "action", "actor", "result", "organisation")
        found["actor_name"] = found.pop("actor")
        return found
