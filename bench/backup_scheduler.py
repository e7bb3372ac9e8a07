"""The cost at rest of scheduled backups: one tick of the backup scheduler (every 15 s in the
controller) for N instances, each with a week of daily snapshots, on the fake engine and the
embedded SQLite database. The baseline, measured in the same run, is one controller pass without
the scheduler (its observation, operations, drift repair and edge sync) for the same instances.

    .venv/bin/python -m bench.backup_scheduler [--instances 200] [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import timedelta

DATA_DIR = tempfile.mkdtemp(prefix="hafen-bench-tick-")
os.environ.update(HAFEN_DATA_DIR=DATA_DIR, HAFEN_ENGINE="fake", HAFEN_PREFIX="benchtick")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    from django.core.management import call_command

    from hafen.django_setup import setup

    setup()
    call_command("migrate", verbosity=0)
    from django.utils import timezone

    from bench.common import conclude, log, new_report, stats
    from hafen import crypto
    from hafen.config import get_settings
    from hafen.controller import backups as scheduler
    from hafen.controller.loop import Controller
    from hafen.edge.client import FakeEdge
    from hafen.engine.fake import FakeEngine
    from hafen.instances.models import (
        ACTIVE_STATES,
        Instance,
        InstanceSecret,
        Operation,
        Snapshot,
        SnapshotStatus,
        State,
    )

    report = new_report("backup_scheduler", instances=args.instances, runs=args.runs)

    def body() -> None:
        now = timezone.now()
        instances = Instance.objects.bulk_create(
            Instance(name=f"i{n:04d}", app="demo", version="1.0", domain=f"i{n:04d}.localhost", state=State.RUNNING,
                     created_at=now - timedelta(days=30)) for n in range(args.instances))
        Snapshot.objects.bulk_create(
            Snapshot(instance=i, instance_name=i.name, app="demo", version="1.0", status=SnapshotStatus.OK,
                     restic_id=f"{i.pk:08x}{day:056x}", created_at=now - timedelta(days=day))
            for i in instances for day in range(7))
        secret = crypto.encrypt("not-used")
        InstanceSecret.objects.bulk_create(InstanceSecret(instance=i, name=s, ciphertext=secret)
                                           for i in instances for s in ("db_password", "admin_password"))
        engine = FakeEngine()
        engine.images.update({"hafen/demo:1.0", "hafen/postgres:15", "hafen/redis:7", "hafen/edge:caddy"})
        controller = Controller(engine, FakeEdge(engine), get_settings())
        scheduler.INTERVAL = 0.0
        controller.backups.tick = lambda obs, active: None  # type: ignore[method-assign]
        log("bringing the instances' services up in the fake engine")
        for _ in range(100):  # their first passes repair the missing services
            controller.pass_once()
            if not Operation.objects.filter(state__in=ACTIVE_STATES).exists():
                break
        running = Instance.objects.filter(state=State.RUNNING).count()
        assert running == args.instances, f"only {running} instances run"
        Instance.objects.update(created_at=now - timedelta(days=30))
        passes, ticks = [], []
        real = scheduler.BackupScheduler(engine, get_settings())
        for _ in range(args.runs):
            started = time.perf_counter()
            controller.pass_once()
            passes.append(time.perf_counter() - started)
            obs = engine.observe("benchtick")
            started = time.perf_counter()
            real.tick(obs, [])
            ticks.append(time.perf_counter() - started)
        tick, base = stats(ticks, 1000), stats(passes, 1000)
        report["tick_ms"], report["pass_without_scheduler_ms"] = tick, base
        assert tick is not None and base is not None
        report["tick_to_pass_ratio"] = round(tick["median"] / base["median"], 3)
        report["core_share_at_15s"] = round(tick["median"] / 1000 / 15.0, 5)
        log(f"{args.instances} instances: a scheduler tick takes {tick['median']:.1f} ms (median of {args.runs}); "
            f"a controller pass without it {base['median']:.1f} ms; ratio {report['tick_to_pass_ratio']}; "
            f"at one tick per 15 s: {100 * report['core_share_at_15s']:.3f} % of a core")

    return conclude(report, body, lambda r: f"tick {r.get('tick_ms', {}).get('median')} ms")


if __name__ == "__main__":
    raise SystemExit(main())
