"""What the stream tests share: a small EIGER-like calibration, and hostile DECTRIS
Stream V2 messages (small on the wire, huge if trusted)."""

from __future__ import annotations

import json
from pathlib import Path

import cbor2
import numpy as np

from saxs_pipeline.demo.eiger import eiger_calibration_dict
from saxs_pipeline.frames.compression import HEADER, compress_bslz4

SHAPE = (96, 80)


def calibration(tmp: Path) -> Path:
    """``tmp/cal.json``: the EIGER demo calibration at :data:`SHAPE`, no masked pixels."""
    cal = eiger_calibration_dict(SHAPE)
    cal["Masks"][0]["Oversampling"] = 1
    np.save(tmp / "mask.npy", np.zeros(SHAPE, bool))
    path = tmp / "cal.json"
    path.write_text(json.dumps(cal))
    return path

_BLOCK = 8192  # bytes: the bitshuffle block of 2048 uint32 the encoder makes


def zero_bomb(shape: tuple[int, int], nbytes: int | None = None) -> bytes:
    """Bitshuffle-LZ4 of zeros in ``shape`` (uint32), built from one compressed block in
    milliseconds (compressing 1 GiB takes seconds): 16384 x 16384 is 6 MB and decodes to
    1 GiB. ``nbytes``: the uncompressed size its header claims (default: the true one).
    The image's size must be a multiple of 8 kB to decode."""
    block = compress_bslz4(np.zeros(_BLOCK // 4, np.uint32))[HEADER.size:]
    size = shape[0] * shape[1] * 4
    return HEADER.pack(size if nbytes is None else nbytes, _BLOCK) + block * (size // _BLOCK)


def image_message(series_id: int, image_id: object, shape: tuple[int, int], payload: bytes) -> bytes:
    """An image message whose one channel is ``payload`` (bslz4, uint32) declared as
    ``shape``."""
    data = cbor2.CBORTag(40, [list(shape), cbor2.CBORTag(70, cbor2.CBORTag(56500, ["bslz4", 4, payload]))])
    return cbor2.dumps({"type": "image", "series_id": series_id, "series_unique_id": str(series_id),
                        "image_id": image_id, "data": {"threshold_1": data}})
