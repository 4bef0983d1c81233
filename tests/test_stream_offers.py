"""The stream source offers the images waiting as soon as no other is waiting: a slow
stream's image at once (not after a batch), a backlog in offers of up to ``batch``."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest
import zmq

from saxs_pipeline.pipeline.streamsource import StreamSource
from saxs_pipeline.stream.codec import encode_end, encode_image, encode_start

from procs import free_port

pytestmark = pytest.mark.timeout(60)


def test_a_lone_image_goes_at_once_and_a_backlog_in_batches() -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.bind(url)
    offers: queue.Queue = queue.Queue()
    backlog_sent = threading.Event()

    def offer(items) -> int:
        offers.put([ref.index for ref, _ in items])
        if items[0][0].index == 1:  # the receiver waits here while the backlog builds
            backlog_sent.wait(10)
        return len(items)

    src = StreamSource(url, offer, lambda *a: None, lambda *a: None, batch=32, idle_timeout=10.0)
    src.start()
    try:
        image = np.zeros((8, 8), np.uint32)
        push.send(encode_start(1, number_of_images=201, image_shape=image.shape))
        push.send(encode_image(1, 0, image))
        assert offers.get(timeout=10) == [0]  # alone: not held for 31 more
        push.send(encode_image(1, 1, image))
        assert offers.get(timeout=10) == [1]
        for i in range(2, 201):
            push.send(encode_image(1, i, image))
        push.send(encode_end(1))
        time.sleep(0.3)  # loopback delivery; fewer queued only means smaller offers
        backlog_sent.set()
        batches = []
        while sum(map(len, batches)) < 199:
            batches.append(offers.get(timeout=10))
        assert [i for b in batches for i in b] == list(range(2, 201))
        assert max(map(len, batches)) <= 32 and len(batches) < 100
    finally:
        src.stop()
        push.close()
        ctx.term()
