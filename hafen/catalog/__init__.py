"""The app catalogue: each folder here with an app.toml is an app.

An app is data: its metadata (app.toml), a Jinja2 stack template rendered to
YAML (stack.yaml.j2) and the build files of its images. No code branches per app.

Every `{{ }}` in a stack template renders as a quoted YAML string (JSON's
quoting, which YAML reads as is) and must be a whole value, so that no value,
an instance named `null` or `yes` say, is ever read as YAML null, a boolean or
a number; the models below turn the strings into the numbers they stand for.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Literal

import jinja2
import yaml
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from hafen.errors import InvalidInput

CATALOG_DIR = Path(__file__).parent
SIZES = ("small", "medium", "large")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Size(_Strict):
    web_replicas: int = Field(ge=1)
    web_memory: str
    web_cpus: float
    db_memory: str
    db_cpus: float
    # labels a node must carry to take an instance of this size (e.g. {"hafen.tier" = "large"})
    node_labels: dict[str, str] = {}
    # defaults of the elastic-capacity policy for instances of this size (e.g. {idle = "never"})
    policy: dict[str, str] = {}


class ParticipantsRow(_Strict):
    """Up to `up_to` participants of an event, the web service needs `web_replicas` replicas, and the
    services the limits of at least the size `size` (empty: the instance's own)."""

    up_to: int = Field(ge=1)
    web_replicas: int = Field(ge=1, le=32)
    size: str = ""


class ImageDef(_Strict):
    tag: str
    context: str
    args: dict[str, str] = {}
    # build arguments of one version only, on top of `args` (a version built differently)
    version_args: dict[str, dict[str, str]] = {}

    def build_args(self, version: str) -> dict[str, str]:
        return {k: v.format(version=version) for k, v in {**self.args, **self.version_args.get(version, {})}.items()}


class ServiceTemplate(_Strict):
    image: str
    command: list[str] | None = None
    environment: dict[str, str] = {}
    secrets: list[str] = []
    volumes: dict[str, str] = {}
    networks: list[Literal["internal", "edge", "mail"]] = ["internal"]  # mail: the relay (hafen/mail/relay.py)
    after: list[str] = []
    job: bool = False
    replicas: int = Field(default=1, ge=0)
    memory: str | None = None
    cpus: float | None = None

    @field_validator("environment", mode="before")
    @classmethod
    def _strings(cls, value: dict[str, object] | None) -> dict[str, object]:
        """Refuse what YAML did not read as a string (`yes`, `null`, `1`) rather than guess its text."""
        wrong = [str(k) for k, v in (value or {}).items() if not isinstance(v, str)]
        if wrong:
            raise ValueError(f"quote the values of {', '.join(wrong)}: an environment holds only strings")
        return value or {}


class StackTemplate(_Strict):
    services: dict[str, ServiceTemplate]

    def waves(self) -> list[list[str]]:
        """Services grouped in the order they must start: each after its `after`."""
        done: set[str] = set()
        waves: list[list[str]] = []
        pending = dict(self.services)
        while pending:
            wave = sorted(n for n, s in pending.items() if set(s.after) <= done)
            if not wave:
                raise InvalidInput(f"stack template has a cycle among: {', '.join(sorted(pending))}")
            waves.append(wave)
            done.update(wave)
            for name in wave:
                del pending[name]
        return waves


class BackupDef(_Strict):
    """What a backup of the app holds besides its volumes, and what its fingerprint counts."""

    database_service: str
    database_volume: str
    database: str
    user: str
    password_secret: str
    tables: list[str] = []
    # one text value that names the schema's state (e.g. the latest migration); "" if the app has none
    schema_query: str = ""
    # services that hold only state derived from the data (a cache): a restore in place starts them empty
    caches: list[str] = []


class App(_Strict):
    name: str
    title: str
    versions: list[str]
    default_version: str
    web_service: str
    web_port: int
    health_path: str
    # where the running app says its version (a JSON object, the field `version_field`): an update's check
    version_path: str = ""
    version_field: str = "version"
    login_path: str
    admin_username: str
    secrets: list[str]
    admin_password_secret: str
    volumes: list[str]
    images: list[ImageDef]
    sizes: dict[str, Size]
    backup: BackupDef
    # web replicas by an event's expected participants (ascending; beyond the last row, its replicas)
    participants: list[ParticipantsRow] = []
    # The web's health check asks its database and cache, so swarm routes to it only once they answer: a
    # wake from deep sleep may start every service at once instead of wave after wave.
    health_covers_dependencies: bool = False

    def row_for(self, participants: int) -> ParticipantsRow:
        """The row of the table for an event of that many participants (1 web replica without a table)."""
        rows = sorted(self.participants, key=lambda row: row.up_to)
        for row in rows:
            if participants <= row.up_to:
                return row
        return rows[-1] if rows else ParticipantsRow(up_to=participants, web_replicas=1)

    def replicas_for(self, participants: int) -> int:
        return self.row_for(participants).web_replicas

    def larger_size(self, *names: str) -> str:
        """The largest of the named sizes, in the order app.toml lists them (empty names are left out)."""
        order = list(self.sizes)
        return max((name for name in names if name in self.sizes), key=order.index, default=names[0])

    @property
    def backup_volumes(self) -> list[str]:
        """The volumes a backup copies as files: all but the database's, which it dumps."""
        return [v for v in self.volumes if v != self.backup.database_volume]

    @field_validator("versions")
    @classmethod
    def _comparable(cls, value: list[str]) -> list[str]:
        """Versions are ordered (an update goes to a newer one): each must read as a version number."""
        for version in value:
            try:
                Version(version)
            except InvalidVersion:
                raise ValueError(f"{version!r} is not a version number (e.g. 3.3 or 2.1.4)") from None
        return value

    @field_validator("web_port")
    @classmethod
    def _edge_port(cls, value: int) -> int:
        if value != 8000:
            raise ValueError("the edge proxies every app's web service on port 8000")
        return value

    @model_validator(mode="after")
    def _participant_sizes(self) -> App:
        unknown = sorted({row.size for row in self.participants if row.size and row.size not in self.sizes})
        if unknown:
            raise ValueError(f"participants name sizes the app does not have: {', '.join(unknown)}")
        return self

    _directory: Path | None = PrivateAttr(default=None)

    @property
    def directory(self) -> Path:
        return self._directory or CATALOG_DIR / self.name

    def render(self, **context: object) -> StackTemplate:
        try:
            # the instances' mail domain (HAFEN_MAIL_FROM's) where a caller has no instance to render for
            text = _template(self.name).render(**{"mail_domain": "localhost", **context})
            return StackTemplate.model_validate(yaml.safe_load(text))
        except (jinja2.TemplateError, yaml.YAMLError, ValidationError) as exc:
            raise InvalidInput(f"stack template of {self.name} is invalid: {exc}") from exc

    def image_tags(self, version: str) -> list[str]:
        return [image.tag.format(version=version) for image in self.images]

    @property
    def newest_version(self) -> str:
        return max(self.versions, key=Version)

    def newer_versions(self, version: str) -> list[str]:
        """The versions an instance on `version` can be updated to, oldest first."""
        return sorted((v for v in self.versions if Version(v) > Version(version)), key=Version)

    def is_downgrade(self, current: str, target: str) -> bool:
        return Version(target) < Version(current)


# A line with an interpolation: `key: {{ ... }}` or `- {{ ... }}`, the interpolation the whole value.
_WHOLE_VALUE = re.compile(r"\s*(?:-\s+|[\w.-]+:\s+)\{\{(?:(?!\}\}).)*\}\}\s*(?:#.*)?")


def _yaml_string(value: object) -> str:
    """Every `{{ }}` of a stack template: a double-quoted YAML string, whatever the value's text."""
    return json.dumps(str(value))


def compile_template(text: str, where: str) -> jinja2.Template:
    """A stack template whose every `{{ }}` is a whole value and renders as a quoted string."""
    for number, line in enumerate(text.splitlines(), 1):
        if "{{" in line and not _WHOLE_VALUE.fullmatch(line):
            raise InvalidInput(f"{where}:{number}: an interpolation must be a whole value, "
                               'e.g. `image: {{ "hafen/app:" ~ version }}`')
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                             finalize=_yaml_string)
    return env.from_string(text)


@cache
def _template(app: str) -> jinja2.Template:
    """The app's compiled stack template; compiled once, rendered on every controller pass."""
    path = apps()[app].directory / "stack.yaml.j2"
    return compile_template(path.read_text(), str(path))


def catalog_dirs() -> list[Path]:
    """hafen's catalogue, then the folder $HAFEN_CATALOG_EXTRA names (its apps replace those of the same
    name: the tests' catalogue adds versions of the demo app that fail on purpose)."""
    extra = os.environ.get("HAFEN_CATALOG_EXTRA", "")
    return [CATALOG_DIR, *([Path(extra).resolve()] if extra else [])]


@cache
def apps() -> dict[str, App]:
    found: dict[str, App] = {}
    for folder in catalog_dirs():
        for path in sorted(folder.glob("*/app.toml")):
            app = App.model_validate(tomllib.loads(path.read_text()))
            app._directory = path.parent
            found[path.parent.name] = app
    return found


def get_app(name: str) -> App:
    try:
        return apps()[name]
    except KeyError:
        raise InvalidInput(f"unknown app {name!r}; known apps: {', '.join(sorted(apps()))}") from None
