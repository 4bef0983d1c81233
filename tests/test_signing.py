"""Request signatures: the original's v1 (byte-compatible) and our v2, with replay cache."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from saxs_pipeline.control.signing import (
    AuthenticationError,
    ReplayCache,
    Verifier,
    legacy_digest,
    legacy_sign,
    v2_sign,
)

SECRET = "0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000.0


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def original_sign(request: dict, secret: str, now: float) -> dict:
    """The original client's procedure, written out from the spec (research §6.3)."""
    request = dict(request)
    request["time"] = now
    request["sign"] = ""
    h = hashlib.sha512()
    h.update(json.dumps(request, sort_keys=True).encode("utf-8"))
    h.update(secret.encode("utf-8"))
    request["sign"] = h.hexdigest()
    return request


def verifier(clock: Clock | None = None, **kw) -> Verifier:
    return Verifier(SECRET, clock=clock or Clock(), **kw)


def test_legacy_signature_matches_the_original_procedure():
    req = {"command": "stat", "argument": {}}
    ours = legacy_sign(req, SECRET, now=NOW + 0.25)
    assert ours == original_sign(req, SECRET, NOW + 0.25)
    assert len(ours["sign"]) == 128
    assert legacy_digest(ours, SECRET) == ours["sign"]


def test_legacy_request_from_wire_bytes_verifies():
    # The server re-serialises the parsed JSON; floats like 172.0 must survive.
    req = original_sign({"command": "new", "argument": {"calibration": {"PixelSizeMicroM": [172.0]},
                                                       "data": {}}}, SECRET, NOW)
    wire = json.loads(json.dumps(req).encode())
    assert verifier().verify(wire)[1] == 1


def test_legacy_order_untimely_before_signature():
    req = original_sign({"command": "stat"}, "wrong secret", NOW - 901)
    with pytest.raises(AuthenticationError, match="Untimely request"):
        verifier().verify(req)
    req = original_sign({"command": "stat"}, "wrong secret", NOW - 899)
    with pytest.raises(AuthenticationError, match="Wrong signature"):
        verifier().verify(req)


@pytest.mark.parametrize("mutate", [
    lambda r: r.update(command="abort"),
    lambda r: r.update(sign=r["sign"].upper()),
    lambda r: r.update(sign=""),
    lambda r: r.pop("sign"),
    lambda r: r.update(sign=7),
])
def test_legacy_tampering_is_a_wrong_signature(mutate):
    req = original_sign({"command": "stat", "argument": {}}, SECRET, NOW)
    mutate(req)
    with pytest.raises(AuthenticationError, match="Wrong signature"):
        verifier().verify(req)


@pytest.mark.parametrize("stamp", [None, "1700000000", True])
def test_legacy_time_must_be_a_number(stamp):
    req = original_sign({"command": "stat"}, SECRET, NOW)
    req["time"] = stamp
    with pytest.raises(AuthenticationError, match="Untimely"):
        verifier().verify(req)


def test_legacy_replay_is_refused_within_the_window_only():
    clock = Clock()
    v = verifier(clock)
    req = original_sign({"command": "stat"}, SECRET, NOW)
    v.verify(dict(req))
    with pytest.raises(AuthenticationError, match="Replayed request"):
        v.verify(dict(req))
    # Past the window the request is untimely anyway and the cache has forgotten it.
    clock.t = NOW + 1000
    with pytest.raises(AuthenticationError, match="Untimely"):
        v.verify(dict(req))
    v.verify(original_sign({"command": "stat"}, SECRET, clock.t))
    assert len(v.cache) == 1


def test_forgeries_do_not_poison_the_replay_cache():
    v = verifier()
    good = original_sign({"command": "stat"}, SECRET, NOW)
    forged = dict(good, command="abort")
    with pytest.raises(AuthenticationError):
        v.verify(forged)
    assert len(v.cache) == 0
    v.verify(good)


def test_legacy_can_be_disabled():
    with pytest.raises(AuthenticationError, match="disabled"):
        verifier(allow_legacy=False).verify(original_sign({"command": "stat"}, SECRET, NOW))


def _envelope(frame0: bytes) -> dict:
    return json.loads(frame0)


def test_v2_round_trip_with_attachments():
    atts = [b'{"filename": "m.msk", "data": "\\u0000abc"}', b"second"]
    env = _envelope(v2_sign({"command": "new", "argument": {"calibration": {}}}, SECRET, atts, now=NOW))
    assert env["v"] == 2
    assert env["sign"] == hmac.new(SECRET.encode(), env["payload"].encode(), hashlib.sha256).hexdigest()
    body, version = verifier().verify(env, atts)
    assert version == 2 and body["command"] == "new"
    assert body["attachments"] == [hashlib.sha256(a).hexdigest() for a in atts]


@pytest.mark.parametrize("case", ["payload", "sign", "secret", "attachment", "count", "missing"])
def test_v2_tampering_is_refused(case):
    atts = [b"mask bytes"]
    secret = "another secret!!" if case == "secret" else SECRET
    env = _envelope(v2_sign({"command": "stat"}, secret, atts, now=NOW))
    if case == "payload":
        env["payload"] = env["payload"].replace("stat", "abort")
    elif case == "sign":
        env["sign"] = "0" * 64
    elif case == "attachment":
        atts = [b"other bytes"]
    elif case == "count":
        atts = atts + [b"extra"]
    elif case == "missing":
        del env["sign"]
    with pytest.raises(AuthenticationError):
        verifier().verify(env, atts)


def test_v2_replay_and_time_window():
    clock = Clock()
    v = verifier(clock)
    env = _envelope(v2_sign({"command": "stat"}, SECRET, now=NOW))
    v.verify(env)
    with pytest.raises(AuthenticationError, match="Replayed"):
        v.verify(env)
    old = _envelope(v2_sign({"command": "stat"}, SECRET, now=NOW - 301))
    with pytest.raises(AuthenticationError, match="Untimely"):
        v.verify(old)
    # Same signed payload bytes are kept exactly: no re-serialisation on the server.
    env2 = _envelope(v2_sign({"command": "stat", "argument": {"x": 1.0}}, SECRET, now=NOW))
    assert '"x":1.0' in env2["payload"]
    v.verify(env2)


def test_replay_cache_prunes_expired_entries():
    cache = ReplayCache(max_entries=3)
    assert cache.add("a", expires=10, now=0)
    assert not cache.add("a", expires=10, now=1)
    cache.prune(11)
    assert len(cache) == 0
    for key in "bcde":
        cache.add(key, expires=100, now=20)
    assert len(cache) == 3 and "b" not in cache


def test_a_persisted_replay_cache_outlives_its_process(tmp_path):
    """What a restarted server reads: the keys of requests still inside their window
    (the real server restarted: test_faults_server.py)."""
    path = tmp_path / "state" / "server.replay"
    clock = Clock()
    v = verifier(clock, replay_path=path)
    v1 = original_sign({"command": "abort"}, SECRET, NOW)
    v2 = json.loads(v2_sign({"command": "abort"}, SECRET, now=NOW))
    v.verify(dict(v1))
    v.verify(dict(v2))
    v.cache.close()
    again = verifier(clock, replay_path=path)  # a new process on the same file
    for req in (v1, v2):
        with pytest.raises(AuthenticationError, match="Replayed request"):
            again.verify(dict(req))
    # expired keys leave the file at the next prune; the cache stays as small as the window
    clock.t = NOW + 1000
    again.verify(original_sign({"command": "stat"}, SECRET, clock.t))
    again.cache.close()
    assert len(ReplayCache(path=path)) == 1
    # a file that cannot be written costs the persistence (logged), never a request
    (tmp_path / "file").write_text("")
    v = verifier(clock, replay_path=tmp_path / "file" / "x.replay")
    req = original_sign({"command": "stat"}, SECRET, clock.t)
    v.verify(dict(req))
    with pytest.raises(AuthenticationError, match="Replayed request"):
        v.verify(dict(req))  # still refused while this process runs


def test_empty_secret_is_refused():
    with pytest.raises(ValueError):
        Verifier("")
