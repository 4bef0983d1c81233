"""Bluesky documents from a real RunEngine (ophyd-async StreamResource/StreamDatum, ophyd v1
Resource/Datum, filled events) through the wire format and the run tracker: which frames,
where, once; what is refused and how it is named. No sockets or cluster here."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

pytest.importorskip("ophyd_async")

from bluesky import RunEngine  # noqa: E402
from bluesky.plans import count  # noqa: E402
from blueskydet import DATASET, ad_hdf5_detector, filled_detector, make_detector  # noqa: E402

from saxs_pipeline.bluesky.actions import Closed, Filled, Located, Opened  # noqa: E402
from saxs_pipeline.bluesky.runs import RunTracker  # noqa: E402
from saxs_pipeline.bluesky.wire import DocumentError, pack, split, unpack  # noqa: E402

SHAPE = (16, 12)
Docs = list[tuple[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def engine() -> RunEngine:
    return RunEngine({})


def _run(engine: RunEngine, dets: list[Any], n: int, **md: Any) -> Docs:
    docs: Docs = []
    engine(count(dets, num=n), lambda name, doc: docs.append((name, copy.deepcopy(doc))), **md)
    return docs


@pytest.fixture(scope="module")
def stream_docs(engine: RunEngine, tmp_path_factory: pytest.TempPathFactory) -> Docs:
    det = make_detector(tmp_path_factory.mktemp("raw"), SHAPE)
    return _run(engine, [det], 5, saxs_calibration="/cal.json")


def _feed(tracker: RunTracker, docs: Docs) -> list[Any]:
    return [a for name, doc in docs for a in tracker.handle(name, doc)]


def _located(actions: list[Any]) -> list[tuple[str, int, int]]:
    return [(f.ref.source, f.ref.index, f.index) for a in actions if isinstance(a, Located)
            for f in a.frames]


def test_wire_round_trip_msgpack_and_json() -> None:
    doc = {"uid": "e1", "data": {"img": np.arange(12, dtype="<i4").reshape(3, 4),
                                 "x": np.float64(1.5)}, "seq_num": 1}
    back = unpack(pack(doc))
    np.testing.assert_array_equal(back["data"]["img"], doc["data"]["img"])
    assert back["data"]["x"] == 1.5
    assert split(b" start " + json.dumps({"uid": "s", "time": 1.0}).encode()) == \
        ("start", {"uid": "s", "time": 1.0})
    assert split(b"other start " + pack({"uid": "s"}), prefix=b"mine") is None


@pytest.mark.parametrize("message, said", [
    (b"bogus", "is not 'prefix name payload'"),
    (b" bogus_name " + pack({"uid": "x"}), "unknown document name 'bogus_name'"),
    (b" start " + pickle.dumps({"uid": "x"}), "pickled?"),
    (b" start [1, 2]", "a list, not a document"),
    (b" event " + msgpack.packb({"data": {b"nd": True, b"type": "|O", b"kind": b"O",
                                          b"shape": [1], b"data": pickle.dumps(object())}}),
     "only numeric arrays"),
    (b" event " + msgpack.packb({"data": {b"nd": True, b"type": "<i4", b"kind": b"",
                                          b"shape": [1000, 1000], b"data": b"1234"}}),
     "with 4 bytes"),
    (b" start \xc1\xc1", "neither msgpack nor JSON"),
    (b" event [" + b"1," * (9 * 2**20) + b"1]", "(at most 16777216; frames in events go as"),
])
def test_wire_refuses_what_it_cannot_use(message: bytes, said: str) -> None:
    with pytest.raises(DocumentError, match=None) as info:
        split(message)
    assert said in str(info.value)


def test_stream_datum_frames_are_located_at_their_events(stream_docs: Docs) -> None:
    actions = _feed(RunTracker(), stream_docs)
    opened = [a for a in actions if isinstance(a, Opened)]
    assert len(opened) == 1 and opened[0].stream.field == "det"
    assert opened[0].stream.shape == SHAPE and opened[0].stream.per_event == 1
    assert opened[0].start.calibration == "/cal.json" and opened[0].start.name.startswith("scan")
    assert _located(actions) == [("primary", i, i) for i in range(5)]
    events = {d["seq_num"]: d["time"] for n, d in stream_docs if n == "event"}
    times = [f.time for a in actions if isinstance(a, Located) for f in a.frames]
    assert times == [events[i + 1] for i in range(5)]
    assert {a.dataset for a in actions if isinstance(a, Located)} == {DATASET}
    assert isinstance(actions[-1], Closed) and actions[-1].clean and actions[-1].reduced


def test_a_replay_with_one_stream_datum_keys_the_frames_alike(stream_docs: Docs) -> None:
    datums = [d for n, d in stream_docs if n == "stream_datum"]
    merged = dict(datums[0], seq_nums={"start": 1, "stop": 6}, indices={"start": 0, "stop": 5})
    replay = [(n, d) for n, d in stream_docs if n != "stream_datum"]
    first_event = next(i for i, (n, _) in enumerate(replay) if n == "event")
    replay.insert(first_event, ("stream_datum", merged))
    assert _located(_feed(RunTracker(), replay)) == [("primary", i, i) for i in range(5)]


def test_frames_whose_documents_were_lost_are_taken_from_the_file(stream_docs: Docs) -> None:
    # the datum and event of frame 1 and the last two frames' documents never arrive
    seen = {"stream_datum": 0, "event": 0}
    kept: Docs = []
    for name, doc in stream_docs:
        if name in seen:
            seen[name] += 1
            if seen[name] in (2, 4, 5):
                continue
        kept.append((name, doc))
    actions = _feed(RunTracker(), kept)
    got = _located(actions)
    assert sorted(got) == [("primary", i, i) for i in range(5)] and len(got) == 5


def test_a_run_without_stop_is_closed_after_the_idle_time(stream_docs: Docs) -> None:
    now = [0.0]
    tracker = RunTracker(idle=30.0, clock=lambda: now[0])
    actions = _feed(tracker, [(n, d) for n, d in stream_docs if n != "stop"])
    assert len(_located(actions)) == 5
    now[0] = 29.0
    assert tracker.idle() == []
    now[0] = 31.0
    closed = tracker.idle()
    assert len(closed) == 1 and not closed[0].clean and "no stop document" in closed[0].how
    assert tracker.runs == {}


def test_a_run_without_the_image_field_is_not_reduced(engine: RunEngine) -> None:
    from ophyd.sim import det

    actions = _feed(RunTracker(), _run(engine, [det], 3))
    assert [type(a) for a in actions] == [Closed] and not actions[0].reduced
    docs = _run(engine, [det], 2)
    actions = _feed(RunTracker(field="det"), docs)  # a named field that is not an image
    assert len(actions) == 1 and not actions[0].reduced


def test_malformed_documents_are_named(stream_docs: Docs, caplog: pytest.LogCaptureFixture) -> None:
    tracker = RunTracker()
    start = dict(stream_docs[0][1])
    with pytest.raises(DocumentError, match="start document: the document: 'uid' is a required"):
        tracker.handle("start", {k: v for k, v in start.items() if k != "uid"})
    with pytest.raises(DocumentError, match="a uid of letters"):
        tracker.handle("start", dict(start, uid="../../etc"))
    docs = dict(stream_docs)  # the last document of each kind
    tracker.handle("start", start)
    tracker.handle("descriptor", docs["descriptor"])
    with pytest.raises(DocumentError, match=r"stream_resource document .*: uri 'http://x/y.h5' "
                                            "is not a file on this host"):
        tracker.handle("stream_resource", dict(docs["stream_resource"], uri="http://x/y.h5"))
    tracker.handle("stream_resource", docs["stream_resource"])
    datum = docs["stream_datum"]
    with pytest.raises(DocumentError, match=r"stream_datum document .*: indices/start: 'x'"):
        tracker.handle("stream_datum", dict(datum, indices={"start": "x", "stop": 1}))
    with pytest.raises(DocumentError, match=r"rows \[0, 3\) for events \[5, 6\) are not 1 frame"):
        tracker.handle("stream_datum", dict(datum, indices={"start": 0, "stop": 3}))
    with pytest.raises(DocumentError, match="10000000000 rows in one document"):
        tracker.handle("stream_datum", dict(datum, indices={"start": 0, "stop": 10**10},
                                            seq_nums={"start": 1, "stop": 10**10 + 1}))
    with pytest.raises(DocumentError, match="rows after the last one seen"):
        tracker.handle("stream_datum", dict(datum, indices={"start": 10**9, "stop": 10**9 + 1},
                                            seq_nums={"start": 10**9 + 1, "stop": 10**9 + 2}))
    bad = copy.deepcopy(docs["descriptor"])
    bad["uid"], bad["data_keys"]["det"]["shape"] = "d2", [1, 0, 12]
    with pytest.raises(DocumentError, match="field 'det' has shape"):
        tracker.handle("descriptor", bad)
    # documents of a run whose start was not seen: reported once, ignored
    event = dict(docs["event"], descriptor="unknown")
    assert tracker.handle("event", event) == [] and tracker.handle("event", event) == []
    assert sum("whose start this consumer did not see" in r.message for r in caplog.records) == 1


def test_ophyd_v1_resource_datum_and_filled_events(engine: RunEngine, tmp_path: Path) -> None:
    docs = _run(engine, [ad_hdf5_detector(tmp_path, SHAPE)], 3)
    actions = _feed(RunTracker(), docs)
    assert _located(actions) == [("primary", i, i) for i in range(3)]
    path = next(f.path for a in actions if isinstance(a, Located) for f in a.frames)
    assert path.startswith(str(tmp_path)) and path.endswith(".h5")
    docs = _run(engine, [filled_detector(SHAPE)], 3)
    filled = [a for a in _feed(RunTracker(), docs) if isinstance(a, Filled)]
    assert [a.first for a in filled] == [0, 1, 2]
    assert all(a.array.shape == (1, *SHAPE) for a in filled)


@pytest.mark.parametrize("args, said", [
    (["--bluesky", "127.0.0.1:5578"], "give the proxy's out address as tcp://HOST:PORT"),
    (["--tiled", "http://127.0.0.1:1"], "--tiled publishes the runs of --bluesky"),
    (["--bluesky", "tcp://127.0.0.1:9", "-c", "missing.json"], "calibration missing.json does not exist"),
])
def test_saxsdog_bluesky_refuses_bad_start_up_input(tmp_path: Path, args: list[str],
                                                    said: str) -> None:
    import subprocess
    import sys

    saxsdog = Path(sys.executable).parent / "saxsdog"
    done = subprocess.run([str(saxsdog), *args, str(tmp_path / "work")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and said in done.stderr, done.stderr
