"""An organisation as the API, the CLI and the UI show it: hafen.access's description, with what the layers
above it add (its update window, from the rollouts). hafen.access may not import hafen.instances."""

from __future__ import annotations

from typing import Any

from hafen.access import services as access
from hafen.access.models import Organisation
from hafen.instances import rollouts


def describe(organisation: Organisation) -> dict[str, Any]:
    return {**access.describe_organisation(organisation), "update_window": rollouts.describe_window(organisation)}
