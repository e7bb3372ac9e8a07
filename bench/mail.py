"""Benchmark: the apps' mail relay (postfix, dovecot's auth, postfwd2; hafen/mail/relay.py).

A control plane of its own relays to an SMTP server in this process (aiosmtpd) and serves one demo instance.
Measured:

- the relay's cost at rest: its container's memory (docker stats, median of samples) and CPU (its cgroup's
  CPU time over `--seconds`, as % of one core), once with the instance and no mail;
- API call to arrival: `POST /api/v1/mail/test` until the mail is at the SMTP server (median of `--runs`), and
  the same for a mail the instance's web service sends (SMTP with its login, from inside its container, the
  `docker exec` included);
- sustained mails per second: `--mails` mails sent by the web service over `--connections` SMTP sessions,
  from the first send to the last arrival (median of `--rounds`).

Runs under the prefix "benchm" on the ports 39180/39543 (edge), 39865 (web) and 39125 (SMTP server):

    .venv/bin/python -m bench.mail [--runs 10] [--mails 300] [--rounds 3] [--seconds 60]

Results: bench/results/mail-<UTC timestamp>.json and mail-latest.json.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import BenchPlane, conclude, docker, docker_lines, fmt, log, new_report, stats, to_mib, wait_until

PREFIX = "benchm"
HTTP_PORT, HTTPS_PORT, WEB_PORT, SMTP_PORT = 39180, 39543, 39865, 39125
INSTANCE = "mb1"
DOMAIN = "bench.test"

# In the web service's container: send `n` mails over `c` parallel SMTP sessions with the instance's login.
BLAST = r"""
import os, smtplib, sys, threading
from email.message import EmailMessage
tag, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def worker(k):
    with smtplib.SMTP(os.environ["EMAIL_HOST"], int(os.environ["EMAIL_PORT"]), timeout=60) as smtp:
        smtp.login(os.environ["EMAIL_HOST_USER"], open("/run/secrets/smtp_password").read().strip())
        for i in range(k, n, c):
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "Bench <x@elsewhere.example>", "to@example.test", f"{tag} {i}"
            msg.set_content("benchmark")
            smtp.send_message(msg)
threads = [threading.Thread(target=worker, args=(k,)) for k in range(c)]
[t.start() for t in threads]
[t.join() for t in threads]
print("ok")
"""


class Inbox:
    """aiosmtpd's handler: the arrival time of every mail by subject."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.senders: dict[str, str] = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.arrived[str(message["Subject"])] = time.monotonic()
            self.senders[str(message["Subject"])] = envelope.mail_from
        return "250 OK"

    def when(self, subject: str) -> float | None:
        with self.lock:
            return self.arrived.get(subject)

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for s in self.arrived if s.startswith(prefix))

    def last(self, prefix: str) -> float:
        with self.lock:
            return max(t for s, t in self.arrived.items() if s.startswith(prefix))


def host_address() -> str:
    out = docker("network", "inspect", "docker_gwbridge", "--format", "{{range .IPAM.Config}}{{.Gateway}}{{end}}")
    return out.stdout.strip()


def container(service: str) -> str:
    ids = docker_lines("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}")
    if not ids:
        raise RuntimeError(f"no running container of {service}")
    return ids[0]


def cpu_ns(container_id: str) -> int:
    full = docker("inspect", "--format", "{{.Id}}", container_id).stdout.strip()
    for path in (Path(f"/sys/fs/cgroup/cpuacct/docker/{full}/cpuacct.usage"),
                 Path(f"/sys/fs/cgroup/system.slice/docker-{full}.scope/cpu.stat")):
        if path.exists():
            text = path.read_text()
            if path.name == "cpuacct.usage":
                return int(text)
            return int(text.split("usage_usec ")[1].split()[0]) * 1000
    raise RuntimeError("no cgroup CPU accounting found for the relay's container")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--mails", type=int, default=300)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()

    from aiosmtpd.controller import Controller

    report = new_report("mail", runs=args.runs, mails=args.mails, connections=args.connections, rounds=args.rounds,
                        seconds=args.seconds)
    plane = BenchPlane(PREFIX, HTTP_PORT, HTTPS_PORT, WEB_PORT)
    plane.preflight()
    inbox = Inbox()
    server = Controller(inbox, hostname="0.0.0.0", port=SMTP_PORT)
    plane.env.update(HAFEN_SMTP_URL=f"smtp://{host_address()}:{SMTP_PORT}?tls=none",
                     HAFEN_MAIL_FROM=f"hafen@{DOMAIN}", HAFEN_MAIL_RATE="1000000/m", HAFEN_IDLE="never")
    relay = f"{PREFIX}-mail"

    def body() -> None:
        server.start()
        plane.up(report)
        plane.create(INSTANCE, "demo")
        web = container(f"{PREFIX}-{INSTANCE}_web")

        def send_from_web(tag: str, n: int, c: int) -> None:
            docker("exec", web, "python3", "-c", BLAST, tag, str(n), str(c), timeout=600)

        def relay_serves() -> bool:
            """A mail of the instance got through to the SMTP server (the relay restarts once it joins the
            instance's network: a mail taken just before may wait in its queue)."""
            tag = f"warm {uuid.uuid4()}"
            try:
                send_from_web(tag, 1, 1)
            except RuntimeError:
                return False
            return wait_until(lambda: inbox.when(f"{tag} 0") is not None, 15, interval=0.05)

        if not wait_until(relay_serves, 180, interval=2):
            raise RuntimeError("the relay did not take the instance's mail within 180 s")
        token = plane.hafen("user", "token", "admin", "--name", "bench", "--scope", "write").stdout.strip().split()[-1]
        api = httpx.Client(base_url=f"http://127.0.0.1:{WEB_PORT}/api/v1",
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)

        # cost at rest: the relay after its work so far, with no mail for `seconds`
        time.sleep(10)
        relay_id = container(relay)
        memory = []
        before, started = cpu_ns(relay_id), time.monotonic()
        while time.monotonic() - started < args.seconds:
            line = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", relay_id).stdout.strip()
            memory.append(to_mib(line.split("/")[0]))
            time.sleep(max(0.0, min(10.0, args.seconds - (time.monotonic() - started))))
        cpu_percent = (cpu_ns(relay_id) - before) / 1e9 / (time.monotonic() - started) * 100
        report["rest"] = {"memory_mib": round(statistics.median(memory), 1), "memory_samples": len(memory),
                          "cpu_percent_of_a_core": round(cpu_percent, 3), "seconds": args.seconds}
        log(f"relay at rest: {report['rest']['memory_mib']} MiB, {cpu_percent:.3f} % of a core")

        api_times, app_times = [], []
        for run in range(args.runs):
            address = f"api-{run}-{uuid.uuid4().hex[:6]}@example.test"
            started = time.monotonic()
            answer = api.post("/mail/test", json={"address": address})
            if answer.status_code != 202:
                raise RuntimeError(f"POST /mail/test: {answer.status_code} {answer.text}")
            if not wait_until(lambda: inbox.when("hafen test mail") is not None, 60, interval=0.01):
                raise RuntimeError("a test mail did not arrive within 60 s")
            api_times.append(inbox.when("hafen test mail") - started)  # type: ignore[operator]
            with inbox.lock:
                inbox.arrived.pop("hafen test mail", None)
            subject = f"app {run} {uuid.uuid4().hex[:6]}"
            started = time.monotonic()
            send_from_web(subject, 1, 1)
            if not wait_until(lambda s=f"{subject} 0": inbox.when(s) is not None, 60, interval=0.01):
                lines = docker("service", "logs", "--tail", "300", relay, check=False).stdout.splitlines()
                tail = "\n".join(line for line in lines if "connect" not in line)[-3000:]
                raise RuntimeError(f"an app's mail did not arrive within 60 s; the relay's log: {tail}")
            app_times.append(inbox.when(f"{subject} 0") - started)  # type: ignore[operator]
            if inbox.senders[f"{subject} 0"] != f"{INSTANCE}@{DOMAIN}":
                report["problems"].append(f"an app's mail came from {inbox.senders[f'{subject} 0']}")
        report["api_to_arrival_s"] = stats(api_times)
        report["app_to_arrival_s"] = stats(app_times)
        log(f"API to arrival: median {report['api_to_arrival_s']['median']:.3f}s; "  # type: ignore[index]
            f"app to arrival {report['app_to_arrival_s']['median']:.3f}s")  # type: ignore[index]

        rates = []
        for round_ in range(args.rounds):
            tag = f"blast{round_}-{uuid.uuid4().hex[:6]}"
            started = time.monotonic()
            try:
                send_from_web(tag, args.mails, args.connections)
            except RuntimeError as exc:  # a round that fails is reported, the others still count
                report["problems"].append(f"round {round_ + 1}: {exc}")
                log(f"round {round_ + 1}: {exc}")
                continue
            if not wait_until(lambda t=tag: inbox.count(t) >= args.mails, 120, interval=0.05):
                report["problems"].append(f"round {round_ + 1}: {inbox.count(tag)} of {args.mails} arrived in 120 s")
                continue
            rates.append(args.mails / (inbox.last(tag) - started))
            log(f"round {round_ + 1}: {rates[-1]:.1f} mails/s")
        report["sustained_mails_per_s"] = stats(rates, digits=1)

    def _finish() -> None:
        try:
            body()
        finally:
            plane.down(report)
            server.stop()

    return conclude(report, _finish, summary)


def summary(report: dict[str, Any]) -> str:
    rest = report.get("rest") or {}
    api_s, app_s = report.get("api_to_arrival_s") or {}, report.get("app_to_arrival_s") or {}
    rate = report.get("sustained_mails_per_s") or {}
    return "\n".join([
        f"relay at rest: {fmt(rest.get('memory_mib'), 1)} MiB, {fmt(rest.get('cpu_percent_of_a_core'), 3)} % of a core",
        f"API call to arrival: median {fmt(api_s.get('median'), 3)} s (p90 {fmt(api_s.get('p90'), 3)}, "
        f"n {api_s.get('n')})",
        f"app's mail to arrival: median {fmt(app_s.get('median'), 3)} s (p90 {fmt(app_s.get('p90'), 3)})",
        f"sustained: median {fmt(rate.get('median'), 1)} mails/s (min {fmt(rate.get('min'), 1)}, "
        f"max {fmt(rate.get('max'), 1)})",
        *[f"problem: {p}" for p in report["problems"]],
    ])


if __name__ == "__main__":
    sys.exit(main())
