"""The app catalogue: each folder here with an app.toml is an app.

An app is data: its metadata (app.toml), a Jinja2 stack template rendered to
YAML (stack.yaml.j2) and the build files of its images. No code branches per app.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Literal

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class ImageDef(_Strict):
    tag: str
    context: str
    args: dict[str, str] = {}


class ServiceTemplate(_Strict):
    image: str
    command: list[str] | None = None
    environment: dict[str, str] = {}
    secrets: list[str] = []
    volumes: dict[str, str] = {}
    networks: list[Literal["internal", "edge"]] = ["internal"]
    after: list[str] = []
    job: bool = False
    replicas: int = Field(default=1, ge=0)
    memory: str | None = None
    cpus: float | None = None

    @field_validator("environment", mode="before")
    @classmethod
    def _strings(cls, value: dict[str, object]) -> dict[str, str]:
        return {str(k): str(v) for k, v in (value or {}).items()}


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


class App(_Strict):
    name: str
    title: str
    versions: list[str]
    default_version: str
    web_service: str
    web_port: int
    health_path: str
    login_path: str
    admin_username: str
    secrets: list[str]
    admin_password_secret: str
    volumes: list[str]
    images: list[ImageDef]
    sizes: dict[str, Size]

    @field_validator("web_port")
    @classmethod
    def _edge_port(cls, value: int) -> int:
        if value != 8000:
            raise ValueError("the edge proxies every app's web service on port 8000")
        return value

    @property
    def directory(self) -> Path:
        return CATALOG_DIR / self.name

    def render(self, **context: object) -> StackTemplate:
        try:
            text = _template(self.name).render(**context)
            return StackTemplate.model_validate(yaml.safe_load(text))
        except (jinja2.TemplateError, yaml.YAMLError, ValidationError) as exc:
            raise InvalidInput(f"stack template of {self.name} is invalid: {exc}") from exc

    def image_tags(self, version: str) -> list[str]:
        return [image.tag.format(version=version) for image in self.images]


@cache
def _template(app: str) -> jinja2.Template:
    """The app's compiled stack template; compiled once, rendered on every controller pass."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    return env.from_string((CATALOG_DIR / app / "stack.yaml.j2").read_text())


@cache
def apps() -> dict[str, App]:
    found: dict[str, App] = {}
    for path in sorted(CATALOG_DIR.glob("*/app.toml")):
        found[path.parent.name] = App.model_validate(tomllib.loads(path.read_text()))
    return found


def get_app(name: str) -> App:
    try:
        return apps()[name]
    except KeyError:
        raise InvalidInput(f"unknown app {name!r}; known apps: {', '.join(sorted(apps()))}") from None
