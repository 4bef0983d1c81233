"""Frames, limits, reply encoding and the shipped request/result schemas."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from saxs_pipeline.control import protocol as proto


def test_nan_travels_as_the_bare_token_like_the_original():
    data = proto.encode({"result": "plot", "data": {"graphs": [{"array": [[1.0, float("nan")]]}]}})
    assert b"NaN" in data
    back = proto.decode_reply(data)
    assert math.isnan(back["data"]["graphs"][0]["array"][0][1])


def test_numpy_values_and_paths_encode():
    msg = proto.encode({"a": np.arange(3), "b": np.float32(1.5), "c": Path("/x/y"), "d": (1, 2)})
    assert json.loads(msg) == {"a": [0, 1, 2], "b": 1.5, "c": "/x/y", "d": [1, 2]}


@pytest.mark.parametrize("frame, text", [
    (b"not json", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"", "not valid JSON"),
])
def test_undecodable_frames_give_the_originals_value_error(frame, text):
    with pytest.raises(proto.RequestError) as info:
        proto.decode_json_frame(frame)
    assert info.value.reply()["result"] == "ValueError in request"
    assert text in info.value.reply()["data"]["Error"]


def test_size_limits():
    limits = proto.Limits(max_request_bytes=100, max_total_bytes=1000, max_attachments=2)
    proto.check_sizes([b"x" * 100, b"y" * 900], limits)
    for frames, text in [
        ([b"x" * 101], "request too large: 101 bytes"),
        ([b"x", b"y" * 1000], "request too large: 1001 bytes"),
        ([b"x", b"", b"", b""], "too many attachments"),
        ([], "empty"),
    ]:
        with pytest.raises(proto.RequestError, match=text) as info:
            proto.check_sizes(frames, limits)
        assert info.value.result == "ValueError in request"


GOOD_REQUESTS = [
    {"command": "stat", "argument": {}, "time": 1.0, "sign": "ab"},
    {"command": "stat"},
    {"command": "new", "argument": {"calibration": {"Masks": []}, "data": {}}, "time": 1, "sign": ""},
    {"command": "listdir", "argument": {"directory": ["a", "b"]}},
    {"command": "listdir", "argument": {"directory": "a/b"}},
    {"command": "plotdata", "argument": {}},
    {"command": "stat", "argument": {}, "time": 1.0, "nonce": "n", "attachments": ["0" * 64]},
]

BAD_REQUESTS = [
    ({"command": "explode"}, "$.command"),
    ({"argument": {}}, "'command' is a required property"),
    ({"command": "new", "argument": {}}, "'calibration' is a required property"),
    ({"command": "new"}, "'argument' is a required property"),
    ({"command": "stat", "argument": {"colour": 1}}, "Additional properties"),
    ({"command": "stat", "extra": 1}, "Additional properties"),
    ({"command": "listdir", "argument": {"directory": [1]}}, "$.argument.directory"),
    ({"command": "stat", "time": "now"}, "$.time"),
    ([1, 2], "is not of type 'object'"),
]


@pytest.mark.parametrize("request_", GOOD_REQUESTS)
def test_valid_requests(request_):
    proto.validate_request(request_)


@pytest.mark.parametrize("request_, text", BAD_REQUESTS)
def test_invalid_requests_give_error_dict_not_a_bare_string(request_, text):
    with pytest.raises(proto.RequestError) as info:
        proto.validate_request(request_)
    reply = info.value.reply()
    assert reply["result"] == "ValidationError in request"
    assert text in reply["data"]["Error"]
    proto.validate_result(reply)  # the original's string data broke its own result schema


STAT = {"images processed": 3, "queue length": 0, "time": 2.0, "start time": 1.0,
        "frames per sec": 1.5, "time interval": 2.0, "pics": 3, "failed": 0}
GRAPH = {"kind": "Radial", "conf": {}, "columnLabels": ["q", "I", "err"],
         "array": [[0.1, 0.2], [1.0, float("nan")], [0.1, 0.1]], "mask": {}, "Integparam": {"I0": 1.0}}

GOOD_REPLIES = [
    {"result": "stat", "data": {"stat": STAT}},
    {"result": "stat", "data": {"stat": {}}},
    {"result": "new queue", "data": {"cal": {"Masks": []}}},
    {"result": "queue closed", "data": {"stat": STAT}},
    {"result": "queue aborted", "data": {"stat": {}}},
    {"result": "plot", "data": {"filename": "x", "graphs": [GRAPH], "stat": STAT, "history": [1.0],
                                "IntegralParameters": {"R0": {"time": [None], "file": ["x"],
                                                              "I0": [1.0], "I1": [1.0], "I2": [1.0]}}}},
    {"result": "no image yet", "data": {"stat": STAT}},
    {"result": "no queue", "data": {}},
    {"result": "cal", "data": {"cal": {}, "attachments": [{"filename": "m", "data": "x"}]}},
    {"result": "listdir", "data": {"dircontent": [{"isdir": True, "path": "a"}], "directory": ["", "x"]}},
    {"result": "resultfileslists", "data": {"fileslist": {"Radial0": ["a.chi"]}}},
    {"result": "queue restarted with all files", "data": {"stat": STAT}},
    proto.error_reply("AuthenticationError", "'Wrong signature.'"),
]


@pytest.mark.parametrize("reply", GOOD_REPLIES)
def test_result_schema_accepts_every_reply_shape(reply):
    proto.validate_result(json.loads(proto.encode(reply)))


@pytest.mark.parametrize("reply", [
    {"result": "stat"},
    {"result": "stat", "data": {"stat": {"unknown": 1}}},
    {"result": "stat", "data": {"colour": 1}},
    {"result": "x", "data": "a string"},
    {"result": "plot", "data": {"graphs": [{"kind": "Other", "array": [], "columnLabels": []}]}},
])
def test_result_schema_rejects(reply):
    with pytest.raises(jsonschema.ValidationError):
        proto.validate_result(reply)


def test_attachment_frames():
    att = proto.parse_attachment(json.dumps({"filename": "m.msk", "data": "\x00\xff"}).encode(), 0)
    assert att["data"] == "\x00\xff"
    with pytest.raises(proto.RequestError, match="attachment 1"):
        proto.parse_attachment(b'{"filename": "x"}', 1)
    with pytest.raises(proto.RequestError, match="attachment 2 is not valid JSON"):
        proto.parse_attachment(b"raw", 2)


def test_is_error():
    assert proto.is_error(proto.error_reply("X", "y"))
    assert not proto.is_error(proto.reply("stat", {"stat": {}}))


def test_schemas_are_valid_draft_2020_12():
    for name in ("LeashRequestSchema.json", "LeashResultSchema.json", "LeashEnvelopeV2.json",
                 "NetworkSchema.json"):
        schema = json.loads(proto.schema_path(name).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
