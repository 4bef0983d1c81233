"""The ``saxs_*`` Prometheus metrics on the scheduler's ``/metrics``, scraped over HTTP
from a real LocalCluster while a real queue runs (module saxs_pipeline.live.metrics)."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest

pytest.importorskip("prometheus_client")
from distributed import Client
from prometheus_client.parser import text_string_to_metric_families

from saxs_pipeline.live.state import LATENCY_BUCKETS, Histogram
from saxs_pipeline.pipeline.queue import ImageQueue

NAMES = ("saxs_frames_processed", "saxs_frames_failed", "saxs_frames_retried",
         "saxs_backlog_frames", "saxs_latency_seconds", "saxs_integration_seconds")


@pytest.fixture(scope="module")
def client(inprocess_client: Client) -> Client:
    return inprocess_client  # the scheduler and its log are in this process (conftest)


def scrape(client: Client) -> dict[str, dict[tuple, float]]:
    """``/metrics`` over HTTP: {sample name: {labels as sorted tuple: value}} of ours."""
    port = client.cluster.scheduler.http_server.port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in NAMES:
            continue
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def of_queue(metrics: dict[str, dict[tuple, float]], name: str, qid: str, **labels) -> float:
    key = tuple(sorted({"queue": qid, **labels}.items()))
    return metrics.get(name, {}).get(key, -1.0)


def test_histogram_buckets_are_le() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(v)
    assert h.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]  # a bound counts as <=
    assert h.count == 5 and h.total == pytest.approx(8.65)


def test_counters_match_the_queue_exactly(client: Client, saxs_setup) -> None:
    setup = saxs_setup(24)
    # Not a TIFF at all (its header names an absurd size): read as "still being written",
    # tried again twice, then failed -- so retried and failed are both non-zero.
    (setup.data / "frame_bad.tif").write_bytes(b"II*\x00garbage" * 10)
    q = ImageQueue(client, setup.calibration, setup.data, batch_size=4, retries=2,
                   retry_delay=0.05)
    q.start()
    seen: list[float] = []
    stop = threading.Event()

    def scraper() -> None:  # scrapes during the run: a counter never goes down
        while not stop.wait(0.1):
            seen.append(of_queue(scrape(client), "saxs_frames_processed_total", q.queue_id))

    t = threading.Thread(target=scraper)
    t.start()
    try:
        q.readdir(wait=True)
        assert q.join(60)
        # The feed pushes every 0.5 s; wait (bounded) for the push after the last frame,
        # then every number must be exact -- the queue is still open, i.e. during the run.
        stats = q.stats()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            m = scrape(client)
            if of_queue(m, "saxs_frames_processed_total", q.queue_id) == stats["images processed"] \
                    and of_queue(m, "saxs_frames_failed_total", q.queue_id) == stats["failed"]:
                break
            time.sleep(0.1)
    finally:
        stop.set()
        t.join(10)
    retried = q.dispatcher.counters()["retried"]
    q.close()
    assert stats["images processed"] == 24 and stats["failed"] == 1 and retried == 2
    assert of_queue(m, "saxs_frames_processed_total", q.queue_id) == 24
    assert of_queue(m, "saxs_frames_failed_total", q.queue_id) == 1
    assert of_queue(m, "saxs_frames_retried_total", q.queue_id) == retried
    assert of_queue(m, "saxs_backlog_frames", q.queue_id) == stats["queue length"] == 0
    for hist in ("saxs_latency_seconds", "saxs_integration_seconds"):
        assert of_queue(m, f"{hist}_count", q.queue_id) == 24
        assert of_queue(m, f"{hist}_bucket", q.queue_id, le="+Inf") == 24
        assert of_queue(m, f"{hist}_sum", q.queue_id) > 0
    buckets = [of_queue(m, "saxs_latency_seconds_bucket", q.queue_id, le=str(b))
               for b in LATENCY_BUCKETS]
    assert buckets == sorted(buckets)  # cumulative
    assert seen and seen == sorted(seen)


def test_queues_have_their_own_labels(client: Client, saxs_setup, tmp_path) -> None:
    setup = saxs_setup(3)
    other = tmp_path / "other"
    other.mkdir()
    for i in range(5):
        setup.write(100 + i, other)
    qa = ImageQueue(client, setup.calibration, setup.data, queue_id="qa-labels")
    qb = ImageQueue(client, setup.calibration, other, queue_id="qb-labels",
                    out_dir=tmp_path / "out-b")
    for q in (qa, qb):
        q.start()
        q.readdir(wait=True)
    for q in (qa, qb):
        assert q.join(60)
        q.close()  # the last push is done when close returns
    m = scrape(client)
    assert of_queue(m, "saxs_frames_processed_total", "qa-labels") == 3
    assert of_queue(m, "saxs_frames_processed_total", "qb-labels") == 5
    assert of_queue(m, "saxs_latency_seconds_count", "qb-labels") == 5
