"""Engines by name; the settings choose one."""

from functools import cache

from hafen.config import get_settings
from hafen.engine.base import Engine


@cache
def get_engine() -> Engine:
    settings = get_settings()
    kind = settings.engine
    if kind == "fake":
        from hafen.engine.fake import FakeEngine

        return FakeEngine()
    from hafen.engine.swarm import SwarmEngine

    return SwarmEngine(registry=settings.registry)
