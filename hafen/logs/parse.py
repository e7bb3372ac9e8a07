"""Lines as the collector spools them (syslog, RFC 5424), and Python tracebacks joined from them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

LEVELS = ("debug", "info", "warning", "error", "critical")
# Docker's syslog driver, format rfc5424micro: <PRI>1 TIME HOST TAG PID TAG - MESSAGE
_SYSLOG = re.compile(r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (?:-|\[.*?\]) ?(.*)", re.S)
# The tag hafen gives every service (engine.base.log_tag): prefix.instance.service/container
_TAG = re.compile(r"([a-z0-9]*)\.([a-z0-9-]*)\.([A-Za-z0-9_.-]+?)/([0-9a-f]*)$")
_LEVEL_WORD = re.compile(
    r"\b(DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRITICAL|CRIT|FATAL|EMERG|ALERT|PANIC)\b")
_WORD_LEVEL = {"DEBUG": "debug", "INFO": "info", "NOTICE": "info", "WARN": "warning", "WARNING": "warning",
               "ERROR": "error", "ERR": "error", "CRITICAL": "critical", "CRIT": "critical",
               "FATAL": "critical", "EMERG": "critical", "ALERT": "critical", "PANIC": "critical"}
_LEVEL_JSON = re.compile(r'"(?:level|levelname|severity)"\s*:\s*"(\w+)"', re.I)


@dataclass
class Line:
    ts: float
    prefix: str
    instance: str  # "": one of hafen's own services (or the controller)
    service: str
    container: str
    level: str
    message: str


def level_of(message: str) -> str:
    """The level a line states of itself ("ERROR", "[warning]", level=...), else info."""
    head = message[:160]
    found = _LEVEL_JSON.search(head)
    if found and found.group(1).upper() in _WORD_LEVEL:
        return _WORD_LEVEL[found.group(1).upper()]
    found = _LEVEL_WORD.search(head.upper()) if "level=" in head.lower() else _LEVEL_WORD.search(head)
    return _WORD_LEVEL[found.group(1)] if found else "info"


def parse(raw: str) -> Line | None:
    """One spooled line; None for what no hafen service sent (another prefix's, or garbage)."""
    match = _SYSLOG.match(raw)
    if not match:
        return None
    _pri, stamp, _host, tag, _pid, _msgid, message = match.groups()
    tagged = _TAG.match(tag)
    if not tagged:
        return None
    try:
        ts = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    prefix, instance, service, container = tagged.groups()
    return Line(ts, prefix, instance, service, container, level_of(message), message)


@dataclass
class Traceback:
    """A Python traceback, joined from the lines one container wrote."""

    line: Line  # its first line ("Traceback (most recent call last):"), for time and origin
    lines: list[str] = field(default_factory=list)
    exc_type: str = ""
    exc_message: str = ""
    context: list[str] = field(default_factory=list)  # the lines the container wrote just before

    @property
    def frames(self) -> list[tuple[str, str]]:
        """(file, function) of each frame, without line numbers."""
        found = []
        for text in self.lines:
            match = _FRAME.match(text)
            if match:
                found.append((match.group(1), match.group(2)))
        return found


_FRAME = re.compile(r'\s+File "([^"]+)", line \d+, in (\S+)')
_EXCEPTION = re.compile(r"([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Fault|[A-Z]\w*)):?(?: (.*))?$")
_START = "Traceback (most recent call last):"
CONTEXT_LINES = 5
MAX_LINES = 400


class Assembler:
    """Joins tracebacks per container, as their lines arrive one by one among other containers' lines.

    `feed` yields each traceback once its last line (the exception's) has come (each traceback of a chain
    on its own); error lines that are not part of a traceback are yielded as lines.
    """

    def __init__(self) -> None:
        self.open: dict[str, Traceback] = {}
        self.recent: dict[str, list[str]] = {}

    def feed(self, line: Line) -> Iterator[Traceback | Line]:
        key = f"{line.prefix}.{line.instance}.{line.service}/{line.container}"
        text = line.message.rstrip("\r\n")
        current = self.open.get(key)
        if current is None:
            if text.endswith(_START):
                line.level = "error"
                self.open[key] = Traceback(line, [text], context=list(self.recent.get(key, [])))
            elif line.level in ("error", "critical"):
                yield line
        else:
            line.level = "error"
            current.lines.append(text)
            stripped = text.strip()
            if stripped and not text.startswith((" ", "\t")):
                match = _EXCEPTION.match(stripped)
                del self.open[key]
                if match:  # the exception's line ends it
                    current.exc_type, current.exc_message = match.group(1), match.group(2) or ""
                    yield current
            elif len(current.lines) > MAX_LINES:
                del self.open[key]
        recent = self.recent.setdefault(key, [])
        recent.append(text)
        del recent[:-CONTEXT_LINES]
