"""Stream V2 CBOR: round trips (exact; integer images, lossless codec) and clear errors
for messages of the wrong type or shape."""

from __future__ import annotations

import cbor2
import numpy as np
import pytest

from saxs_pipeline.frames.compression import compress_bslz4
from saxs_pipeline.stream.codec import (
    StreamDecodeError,
    decode_message,
    encode_end,
    encode_image,
    encode_start,
)
from saxs_pipeline.stream.messages import EndMessage, ImageMessage, StartMessage


@pytest.mark.parametrize("compression", ["bslz4", "none"])
@pytest.mark.parametrize("dtype", ["u1", "u2", "u4", "i4", "f4"])
def test_image_round_trip(compression: str, dtype: str) -> None:
    a = np.random.default_rng(2).poisson(9, (31, 17)).astype(dtype)
    msg = decode_message(encode_image(7, 12, a, compression=compression, start_time=1.25, frame_time=0.01))
    assert isinstance(msg, ImageMessage)
    assert (msg.series_id, msg.image_number) == (7, 12)
    assert msg.array.dtype == a.dtype
    np.testing.assert_array_equal(msg.array, a)
    assert msg.metadata["start_time"] == pytest.approx(1.25)
    assert msg.metadata["real_time"] == pytest.approx(0.01)


def test_start_and_end() -> None:
    start = decode_message(encode_start(3, number_of_images=10, image_shape=(20, 30), beam_center_x=1.5))
    assert isinstance(start, StartMessage)
    assert (start.series_id, start.number_of_images, start.image_shape) == (3, 10, (20, 30))
    assert start.fields["beam_center_x"] == 1.5
    end = decode_message(encode_end(3))
    assert isinstance(end, EndMessage) and end.series_id == 3


def test_dectris_layout_with_column_major_and_mask_map() -> None:
    a = np.arange(12, dtype=np.uint32).reshape(3, 4)
    column_major = cbor2.CBORTag(1040, [[3, 4], cbor2.CBORTag(70, a.T.tobytes())])
    compressed = cbor2.CBORTag(40, [[3, 4], cbor2.CBORTag(70, cbor2.CBORTag(56500, ["bslz4", 4, compress_bslz4(a)]))])
    frame = cbor2.dumps({"type": "image", "series_id": 1, "image_id": 0,
                         "data": {"threshold_1": compressed, "threshold_2": column_major}})
    msg = decode_message(frame)
    np.testing.assert_array_equal(msg.data["threshold_1"], a)
    np.testing.assert_array_equal(msg.data["threshold_2"], a)
    start = decode_message(cbor2.dumps({"type": "start", "series_id": 1,
                                        "pixel_mask": {"threshold_1": cbor2.CBORTag(40, [[3, 4], cbor2.CBORTag(70, a.tobytes())])}}))
    np.testing.assert_array_equal(start.pixel_mask["threshold_1"], a)


@pytest.mark.parametrize("payload, match", [
    ({"type": "status", "series_id": 1}, r"type 'status'.* has type 'status'; expected 'start', 'image' or 'end'"),
    ([1, 2], "is a CBOR list, not a map"),
    ({"type": "image", "series_id": 1}, r"type 'image', series_id 1.*lacks the field 'data'"),
    ({"type": "image", "series_id": 1, "image_id": 5, "data": {"t": b"raw"}}, r"image_id 5.*channel 't' is bytes, not a 2-D array"),
    ({"type": "image", "series_id": 1, "image_id": 6,
      "data": {"t": cbor2.CBORTag(40, [[3, 3], cbor2.CBORTag(70, b"1234")])}}, r"image_id 6.*cannot reshape"),
    ({"type": "image", "series_id": 1, "image_id": 8,
      "data": {"t": cbor2.CBORTag(40, [[4, 4], cbor2.CBORTag(70, cbor2.CBORTag(56500, ["bslz4", 4, b"x" * 40]))])}},
     r"image_id 8.*bslz4 header says \d+ bytes uncompressed, but \(16,\) uint32 needs 64"),
    ({"type": "end"}, r"type 'end'.* lacks the field 'series_id'"),
])
def test_bad_messages_are_named(payload, match: str) -> None:
    with pytest.raises(StreamDecodeError, match=match):
        decode_message(cbor2.dumps(payload))


def test_not_cbor() -> None:
    with pytest.raises(StreamDecodeError, match=r"\(2 bytes, not CBOR\)"):
        decode_message(b"\xff\xfe")


def test_a_decompression_bomb_is_refused_by_its_declared_shape() -> None:
    """6 MB declaring a 16384 x 16384 uint32 image (1 GiB decoded; decoding it took 1.1 s
    and 1.06 GB of RSS): refused from its declared shape against the detector's, before
    any decompression. The same message decodes when no detector shape is given."""
    from time import perf_counter

    from streamcases import image_message, zero_bomb

    frame = image_message(1, 3, (16384, 16384), zero_bomb((16384, 16384)))
    assert len(frame) < 7e6
    t0 = perf_counter()
    with pytest.raises(StreamDecodeError, match=r"image_id 3.*channel 'threshold_1' has shape "
                       r"\(16384, 16384\), the calibration's Imagesize is \[96, 80\]; not decoded"):
        decode_message(frame, (96, 80))
    assert perf_counter() - t0 < 0.5  # measured ~20 ms (cbor2 reading 6 MB); decoding ~1 s
    small = image_message(1, 4, (64, 128), zero_bomb((64, 128)))
    assert not decode_message(small, (64, 128)).array.any()
    lying = image_message(1, 5, (96, 80), zero_bomb((96, 80), nbytes=2**30))
    with pytest.raises(StreamDecodeError, match=r"header says 1073741824 bytes uncompressed, but "
                       r"\(7680,\) uint32 needs 30720"):
        decode_message(lying, (96, 80))


def test_channels_and_counts_are_checked() -> None:
    a = np.zeros((3, 4), np.uint8)
    channel = cbor2.CBORTag(40, [[3, 4], cbor2.CBORTag(64, a.tobytes())])
    many = cbor2.dumps({"type": "image", "series_id": 1, "image_id": 0,
                        "data": {f"t{i}": channel for i in range(17)}})
    with pytest.raises(StreamDecodeError, match="17 channels, more than 16"):
        decode_message(many)
    for key, value in (("number_of_images", "lots"), ("number_of_images", -1),
                       ("image_size_x", 2.5), ("number_of_images", True)):
        with pytest.raises(StreamDecodeError, match=f"field '{key}' is {value!r}, not a count"):
            decode_message(cbor2.dumps({"type": "start", "series_id": 1, key: value}))


def test_what_ran_out_is_said() -> None:
    from saxs_pipeline.stream.codec import error_text

    assert error_text(MemoryError()) == "ran out of memory (MemoryError)"  # was "()"
    assert error_text(MemoryError("Unable to allocate 1 GiB")) == \
        "ran out of memory (Unable to allocate 1 GiB)"
    assert error_text(KeyError("x")) == "'x'" and error_text(ValueError()) == "ValueError"
