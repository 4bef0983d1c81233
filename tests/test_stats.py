"""The scheduler-side statistics plugin (in-process scheduler and workers)."""

from __future__ import annotations

import asyncio
import time

from distributed import Event, get_worker, wait
from distributed.utils_test import gen_cluster

from saxs_pipeline.plugins.stats import PROGRESS_TOPIC, TASK_PREFIX, SaxsStats


def fake_batch(queue_id: str, processed: int, failed: int = 0) -> int:
    """Reports like process_frames does, without frames."""
    w = get_worker()
    w.log_event(PROGRESS_TOPIC, {"queue": queue_id, "key": repr(w.get_current_task()),
                                 "processed": processed, "failed": failed, "incomplete": 0,
                                 "time": time.time()})
    return processed


async def blocked(name: str) -> int:
    await Event(name).wait()
    return 1


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


@gen_cluster(client=True)
async def test_frames_and_rate_from_worker_events(c, s, a, b) -> None:
    await c.register_plugin(SaxsStats(window=5.0))
    futures = [c.submit(fake_batch, "q1", 4, 1, key=(TASK_PREFIX, "q1", i), pure=False)
               for i in range(10)]
    futures += [c.submit(fake_batch, "q2", 2, key=(TASK_PREFIX, "q2", i), pure=False)
                for i in range(3)]
    await wait(futures)
    plugin = s.plugins["saxs-stats"]
    await until(lambda: plugin.processed == 46)
    snap = await c.scheduler.saxs_stats()
    assert snap["processed"] == 46 and snap["failed"] == 10
    assert snap["tasks_done"] == 13 and snap["queue_length"] == 0
    assert snap["fps"] == 46 / 5.0
    assert snap["queues"]["q1"]["processed"] == 40 and snap["queues"]["q2"]["processed"] == 6
    assert set(snap) >= {"start_time", "time", "fps", "queue_length", "processed", "failed"}
    only_q2 = await c.scheduler.saxs_stats(queue="q2")
    assert list(only_q2["queues"]) == ["q2"]


@gen_cluster(client=True)
async def test_queue_length_is_live_not_cumulative(c, s, a, b) -> None:
    await c.register_plugin(SaxsStats())
    go = Event("go")
    futures = [c.submit(blocked, "go", key=(TASK_PREFIX, "qa", i), pure=False) for i in range(6)]
    plugin = s.plugins["saxs-stats"]
    await until(lambda: plugin.snapshot()["queue_length"] == 6)
    snap = await c.scheduler.saxs_stats()
    assert snap["queue_length"] == 6 and snap["queues"]["qa"]["queue_length"] == 6
    await go.set()
    await wait(futures)
    snap = await c.scheduler.saxs_stats()
    assert snap["queue_length"] == 0 and snap["queues"]["qa"]["queue_length"] == 0
    assert snap["tasks_done"] == 6


@gen_cluster(client=True)
async def test_a_rerun_task_is_not_counted_twice(c, s, a, b) -> None:
    await c.register_plugin(SaxsStats())
    plugin = s.plugins["saxs-stats"]
    key = repr((TASK_PREFIX, "q", 1))
    plugin.record("q", 8, 0, key=key)
    plugin.record("q", 8, 0, key=key)  # the same task ran again after its worker died
    plugin.record("q", 0, 1)  # a driver report: a frame that failed after its retries
    snap = await c.scheduler.saxs_stats()
    assert snap["processed"] == 8 and snap["failed"] == 1 and snap["queues"]["q"]["processed"] == 8


@gen_cluster(client=True)
async def test_registration_is_idempotent_and_driver_events_count(c, s, a, b) -> None:
    await c.register_plugin(SaxsStats())
    first = s.plugins["saxs-stats"]
    first.record("q", 3)
    await c.register_plugin(SaxsStats())
    assert s.plugins["saxs-stats"] is first and first.processed == 3
    await c.log_event(PROGRESS_TOPIC, {"queue": "q", "failed": 1})
    await until(lambda: first.failed == 1)


@gen_cluster(client=True, scheduler_kwargs={"preload": ["saxs_pipeline.stats"]})
async def test_scheduler_preload(c, s, a, b) -> None:
    assert isinstance(s.plugins["saxs-stats"], SaxsStats)
    snap = await c.scheduler.saxs_stats()
    assert snap["processed"] == 0 and snap["queues"] == {}
