"""Labels of swarm nodes as people write them, on the command line, in the API and in the UI.

`KEY=VALUE` sets a label, `KEY-` removes one (as `kubectl label` does). A node carries labels (hafen/
instances/nodes.py), and an organisation asks for them (hafen/access/services.py): its new instances go only
to nodes that carry all of its labels. Keys under `hafen.` are hafen's own (a drain marks its node with one).
"""

from __future__ import annotations

import re

from hafen.errors import InvalidInput

_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?")
_VALUE = re.compile(r"[A-Za-z0-9._:/@-]{0,128}")


def parse_changes(changes: list[str]) -> tuple[dict[str, str], list[str]]:
    """The labels to set and the keys to remove; InvalidInput, naming the first bad change, otherwise."""
    if not changes:
        raise InvalidInput("give at least one KEY=VALUE (or KEY- to remove a label)")
    set_, remove = {}, []
    for change in changes:
        if change.endswith("-") and "=" not in change:
            key, value = change[:-1], None
        elif "=" in change:
            key, value = change.split("=", 1)
        else:
            raise InvalidInput(f"not KEY=VALUE or KEY-: {change!r}")
        if not _KEY.fullmatch(key) or key.startswith("hafen."):
            raise InvalidInput(f"not a label key: {key!r} (letters, digits, '.', '_', '-'; not hafen.*)")
        if value is None:
            remove.append(key)
        elif not _VALUE.fullmatch(value):
            raise InvalidInput(f"not a label value: {value!r}")
        else:
            set_[key] = value
    return set_, remove
