"""Autoscaling: the HPA decisions on synthetic metric series (steady, spike, sawtooth, missing data), and
the controller scaling a demo instance's web service from the edge's open requests and its cgroups' CPU."""

import math
from itertools import pairwise

import pytest

from hafen.access.policy import Actor
from hafen.controller import autoscale as controller_autoscale
from hafen.engine.fake import fake_address
from hafen.errors import InvalidInput
from hafen.instances import elastic
from hafen.instances.autoscale import SCALE_UP_PERIOD, STABILISATION, Sample, decide, recommend
from hafen.instances.models import Decision, Instance

LOCAL = Actor.local()


def samples(replicas, per_replica, cpu=None, n=5, start=0.0):
    return [Sample(start + i * 2, replicas, round(per_replica * replicas), cpu) for i in range(n)]


def test_a_recommendation_follows_the_ratio_outside_the_tolerance_band():
    assert recommend(2, samples(2, 10), 10, 70).desired == 2  # at the target
    assert recommend(2, samples(2, 10.5), 10, 70).desired == 2  # within 10 %
    assert recommend(2, samples(2, 25), 10, 70).desired == 5  # ceil(2 x 2.5)
    assert recommend(4, samples(4, 1), 10, 70).desired == 1  # ceil(4 x 0.1)
    assert recommend(4, samples(4, 0), 10, 70).desired == 0  # nothing open: min decides (below)
    by_cpu = recommend(2, samples(2, 1, cpu=140.0), 10, 70)
    assert by_cpu.desired == 4 and by_cpu.numbers["by_metric"] == {"inflight": 1, "cpu": 4}
    assert recommend(2, [], 10, 70) is None  # missing data: no decision
    assert recommend(2, [Sample(0, 0, 0, None)], 10, 70) is None


def test_scale_up_at_most_doubles_and_once_per_period_within_the_range():
    assert decide(2, 9, [], None, 100.0, 1, 8, 0.0) == (4, "load above the target")
    assert decide(2, 9, [], 100.0 - SCALE_UP_PERIOD + 1, 100.0, 1, 8, 0.0)[0] == 2
    assert decide(6, 20, [], None, 100.0, 1, 8, 0.0)[0] == 8
    assert decide(1, 3, [], None, 100.0, 2, 8, 0.0)[0] == 2  # below the least: up to it at once
    assert decide(9, 3, [], None, 100.0, 1, 8, 0.0)[0] == 8


def test_scale_down_only_after_a_whole_stabilisation_window_to_its_highest_recommendation():
    history = [(t, 4 if t < 200 else 2 if t < 210 else 1) for t in range(0, 400, 10)]
    assert decide(4, 1, history, None, 250.0, 1, 8, 0.0)[0] == 4  # the window still holds a 4
    assert decide(4, 1, history, None, 495.0, 1, 8, 0.0)[0] == 4  # and a 2: not to 2 first
    assert decide(4, 1, history, None, 520.0, 1, 8, 0.0)[0] == 1
    assert decide(4, 1, [], None, STABILISATION - 1, 1, 8, 0.0)[0] == 4  # not seen a whole window yet
    assert decide(4, 1, history, None, 520.0, 3, 8, 0.0)[0] == 3  # never below the least (min or floor)


def run(series, target=10, low=1, high=8, step=2.0):
    """The replicas over time for a series of open requests in total (one value per step)."""
    current, history, last_up, seen = 1, [], None, []
    window = []
    replicas = []
    for i, total in enumerate(series):
        now = i * step
        if total is not None:
            window.append(Sample(now, current, total, None))
        window = [s for s in window if now - s.at <= 10]
        rec = recommend(current, window, target, 70)
        if rec is not None:
            history.append((now, rec.desired))
            new, _ = decide(current, rec.desired, history, last_up, now, low, high, 0.0)
            if new > current:
                last_up = now
            if new != current:
                history, window = ([], []) if new < current else (history, [])
                seen.append(now)
                current = new
        replicas.append(current)
    return replicas, seen


def changes(replicas):
    return sum(1 for a, b in pairwise(replicas) if a != b)


def downs(replicas):
    return sum(1 for a, b in pairwise(replicas) if b < a)


def test_a_steady_load_settles_and_never_flaps():
    replicas, _ = run([35] * 300)
    assert replicas[-1] == 4 and changes(replicas[100:]) == 0  # ceil(35 / 10), then nothing


def test_a_spike_scales_up_within_seconds_and_down_once_after_the_window():
    series = [2] * 30 + [60] * 60 + [2] * 300
    replicas, seen = run(series)
    up_at = next(i for i, r in enumerate(replicas) if r > 1)
    assert (up_at - 30) * 2.0 <= 4  # the first new replica within a pass or two of the onset
    assert max(replicas) >= 6 and replicas[-1] == 1
    assert downs(replicas[30:90]) == 0  # none while it holds
    assert downs(replicas[90:]) == 1  # exactly one scale-down after it ends...
    down_at = next(i for i in range(90, len(replicas)) if replicas[i] < replicas[i - 1])
    assert (down_at - 90) * 2.0 >= STABILISATION  # ...after the stabilisation window


def test_a_sawtooth_scales_for_its_peaks_and_does_not_follow_each_tooth_down():
    tooth = [40] * 10 + [2] * 20  # 20 s of load, 40 s of calm, again and again
    replicas, _ = run(tooth * 12)
    assert downs(replicas) == 0 and max(replicas) == 4


def test_missing_data_changes_nothing():
    replicas, _ = run([30] * 10 + [None] * 200)
    assert replicas[-1] == replicas[12] and changes(replicas[12:]) == 0
    assert math.isfinite(replicas[-1])


# -- the controller ----------------------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(controller_autoscale.time, "monotonic", lambda: now[0])
    return now


def test_the_controller_scales_a_web_service_with_its_open_requests_and_back(
        running_instance, controller, converge, engine, edge, clock):
    running_instance("eve")
    elastic.set_policy(LOCAL, "eve", min="1", max="4", target_inflight="2", idle="never")
    edge.open_requests = {f"{fake_address('unit-eve_web', 0)}:8000": 9}
    converge(controller)
    eve = Instance.objects.get(name="eve")
    assert eve.auto_replicas == 2 and engine.services["unit-eve_web"].replicas == 2  # at most double
    decision = Decision.objects.filter(instance=eve, action="scale").first()
    assert decision.reason.startswith("1 to 2 web replicas: load above the target")
    assert decision.numbers["inflight_per_replica"] == 9.0
    clock[0] += 16
    edge.open_requests = {f"{fake_address('unit-eve_web', i)}:8000": 5 for i in range(2)}
    converge(controller)
    assert Instance.objects.get(name="eve").auto_replicas == 4  # ceil(2 x 2.5) = 5, the most is 4

    edge.open_requests = {}
    for _ in range(20):  # calm, but for less than the stabilisation window: no scale-down
        clock[0] += 10
        converge(controller)
    assert Instance.objects.get(name="eve").auto_replicas == 4
    assert controller.autoscaler.above_floor == {eve.pk} and not controller.resting  # its scale-down needs passes
    for _ in range(15):
        clock[0] += 10
        converge(controller)
    eve.refresh_from_db()
    assert eve.auto_replicas == 1 and engine.services["unit-eve_web"].replicas == 1
    assert controller.autoscaler.above_floor == set()
    elastic.set_policy(LOCAL, "eve", max="off")
    converge(controller)
    eve.refresh_from_db()
    assert eve.auto_replicas == 0 and engine.services["unit-eve_web"].replicas == eve.replicas


def test_the_controller_reads_the_cpu_of_the_web_tasks(running_instance, controller, converge, engine, edge, clock):
    running_instance("eve")
    elastic.set_policy(LOCAL, "eve", min="1", max="3", target_cpu="50", idle="never")
    edge.open_requests = {}
    engine.cpu_ns["unit-eve_web.0"] = 0
    converge(controller)
    for _ in range(3):  # 0.5 CPU of the demo web's limit of 0.5: 100 %, twice the target
        clock[0] += 2
        engine.cpu_ns["unit-eve_web.0"] += 1_000_000_000
        converge(controller)
    eve = Instance.objects.get(name="eve")
    assert eve.auto_replicas == 2
    assert Decision.objects.filter(instance=eve, action="scale").first().numbers["cpu_percent"] == 100.0


def test_bad_autoscaling_policies_are_refused(running_instance):
    running_instance("eve")
    with pytest.raises(InvalidInput, match="max: a whole number from 1 to 32, or off"):
        elastic.set_policy(LOCAL, "eve", max="lots")
    with pytest.raises(InvalidInput, match="below min"):
        elastic.set_policy(LOCAL, "eve", min="4", max="2")
    with pytest.raises(InvalidInput, match="target-cpu"):
        elastic.set_policy(LOCAL, "eve", target_cpu="0")
    assert Instance.objects.get(name="eve").policy == {}


def test_an_instance_falls_asleep_without_its_autoscaled_replicas_and_wakes_with_its_own(
        running_instance, controller, converge, engine, edge, clock, access_log):
    from datetime import timedelta

    from django.utils import timezone

    from hafen.instances.models import Sleep

    running_instance("eve")
    elastic.set_policy(LOCAL, "eve", min="1", max="4", target_inflight="2", idle="20s", deep_sleep="never")
    edge.open_requests = {f"{fake_address('unit-eve_web', 0)}:8000": 9}
    converge(controller)
    assert Instance.objects.get(name="eve").auto_replicas == 2
    edge.open_requests = {}
    Instance.objects.filter(name="eve").update(last_active_at=timezone.now() - timedelta(seconds=60))
    controller.elastic.watcher.poll()
    converge(controller)
    eve = Instance.objects.get(name="eve")
    assert (eve.sleep, eve.auto_replicas) == (Sleep.LIGHT, 0)
    assert engine.services["unit-eve_web"].replicas == 0
