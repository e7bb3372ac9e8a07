"""Request and response bodies of the REST API, which are also its OpenAPI schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Field, Schema


class ErrorDetail(Schema):
    code: str
    message: str


class ErrorOut(Schema):
    error: ErrorDetail


class ReplicasOut(Schema):
    desired: int
    running: int


class ServiceOut(Schema):
    replicas: int
    running: int
    state: str
    error: str


class InstanceOut(Schema):
    name: str
    app: str
    version: str
    domain: str
    url: str
    size: str
    organisation: str | None
    state: str
    desired_state: str
    replicas: ReplicasOut
    services: dict[str, ServiceOut]
    created_at: str
    error: str


class StepOut(Schema):
    name: str
    title: str
    state: str
    started_at: str | None
    finished_at: str | None


class OperationOut(Schema):
    id: int
    kind: str
    instance: str
    state: str = Field(description="pending, running, succeeded, failed, or superseded (a newer operation "
                                   "took over before it finished; `error` names it)")
    steps: list[StepOut]
    progress: float
    error: str
    created_at: str
    finished_at: str | None


class LockOut(Schema):
    id: int
    actions: list[str]
    reason: str
    created_by: str
    by_operator: bool
    created_at: str


class InstanceDetailOut(InstanceOut):
    operations: list[OperationOut]
    locks: list[LockOut]
    allowed: list[str] = Field(description="What the caller may do to this instance")


class CreateIn(Schema):
    name: str = Field(max_length=64)
    app: str = Field(max_length=32)
    version: str | None = Field(default=None, max_length=32)
    domain: str | None = Field(default=None, max_length=253)
    size: str = Field(default="small", max_length=16)
    organisation: str | None = Field(default=None, max_length=32)


class ScaleIn(Schema):
    replicas: int = Field(ge=0, le=1000)


class EraseIn(Schema):
    confirm: str = Field(description="The instance's name, typed again", max_length=64)


class CredentialsOut(Schema):
    username: str
    password: str


class PasswordOut(Schema):
    operation: OperationOut
    username: str
    password: str


class LogsOut(Schema):
    service: str
    lines: list[str]


class LockIn(Schema):
    actions: list[str] = Field(max_length=10)
    reason: str = Field(max_length=500)


class AuditOut(Schema):
    id: int
    at: str
    actor: str
    via: str
    source: str
    action: str
    organisation: str | None
    instance: str
    detail: dict[str, Any]
    result: str
    message: str
    operation_id: int | None


class OrganisationIn(Schema):
    slug: str = Field(max_length=64)
    name: str = Field(default="", max_length=100)


class OrganisationOut(Schema):
    slug: str
    name: str
    created_at: datetime


class MemberIn(Schema):
    username: str = Field(max_length=150)
    role: str = Field(default="member", max_length=16)
    can_read_credentials: bool = False
    email: str = Field(default="", max_length=254)


class MemberChangeIn(Schema):
    role: str | None = Field(default=None, max_length=16)
    can_read_credentials: bool | None = None


class MemberOut(Schema):
    username: str
    role: str
    can_read_credentials: bool


class NewMemberOut(MemberOut):
    password: str | None = Field(description="The generated password of a new account, shown once")


class TokenIn(Schema):
    name: str = Field(max_length=64)
    scope: str = Field(default="read", max_length=8)


class TokenOut(Schema):
    id: int
    name: str
    scope: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewTokenOut(TokenOut):
    token: str = Field(description="The token itself, shown this once")


class MeOut(Schema):
    username: str
    operator: bool
    scope: str
    memberships: list[dict[str, str]]
