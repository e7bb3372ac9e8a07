"""The edge agents' reports: what the proxy on another node saw, in the agent's log.

The controller reads only its own node's proxy; a proxy on another node (see edge/agent) is read by that
node's agent, which writes a line to its log when a host has a new request or the open requests change,
and a heartbeat line every HEARTBEAT seconds. The controller follows the agents' service log through the
swarm's manager (controller/remote_edges.py), so no port or credential is needed between them.

Standard library only: the agent's image has no hafen package (this file is copied into it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

TAG = "hafen-edge-report "
HEARTBEAT = 10.0
# A host's request time is reported again when it moved by this much (the first request after a quiet spell
# at once: that is the one that wakes a sleeper).
STEP = 5.0
# Hosts per line: Docker splits a log line longer than 16 KiB.
HOSTS_PER_LINE = 200


@dataclass
class Report:
    node: str
    seen: dict[str, float] = field(default_factory=dict)  # host: newest request (epoch seconds)
    open: dict[str, int] | None = None  # upstream "ip:port": open requests (only those above 0); None: no answer

    def lines(self) -> list[str]:
        """The report as log lines: the hosts spread over several when there are many."""
        hosts = sorted(self.seen.items())
        chunks = [dict(hosts[i:i + HOSTS_PER_LINE]) for i in range(0, len(hosts), HOSTS_PER_LINE)] or [{}]
        return [TAG + json.dumps(asdict(Report(self.node, chunk, self.open)), separators=(",", ":"),
                                 sort_keys=True) for chunk in chunks]


def parse(line: str) -> Report | None:
    """The report in a log line, or None for any other line (the agent logs what it does too)."""
    at = line.find(TAG)
    if at < 0:
        return None
    try:
        data = json.loads(line[at + len(TAG):])
        seen = {str(host): float(ts) for host, ts in data["seen"].items()}
        open_ = None if data["open"] is None else {str(a): int(n) for a, n in data["open"].items()}
        return Report(str(data["node"]), seen, open_)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
