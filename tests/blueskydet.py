"""A simulated SAXS detector for Bluesky tests: an ophyd-async ``StandardDetector`` whose
file writer (provided here, as the issue allows) appends one frame per exposure to an HDF5
file in SWMR mode, one frame per chunk, and announces them as StreamResource/StreamDatum.

ophyd-async's own simulated detectors write 320x240 uint8 frames only; this one writes the
calibration's size in int32, frames a deterministic function of their index
(:func:`frame`), so a test can integrate them directly for reference.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import h5py
import numpy as np
from ophyd_async.core import (
    DetectorAcquireLogic,
    DetectorDataLogic,
    DetectorTriggerLogic,
    PathProvider,
    StandardDetector,
    StreamResourceDataProvider,
    StreamResourceInfo,
    soft_signal_r_and_setter,
)

DATASET = "/entry/data/data"


def frame(i: int, shape: tuple[int, int]) -> np.ndarray:
    """Frame ``i``: rings around (0.45, 0.52) of the frame whose strength varies with i."""
    h, w = shape
    y, x = np.ogrid[:h, :w]
    r = np.hypot(y - h * 0.45, x - w * 0.52)
    base = 2000.0 / (1 + (r / (0.06 * h)) ** 2) ** 2 + 200.0 * np.exp(-((r - 0.25 * h) / 3.0) ** 2)
    return (base * (1.0 + 0.01 * (i % 17)) + 5.0).astype(np.int32)


class FrameFile:
    """The HDF5 file the detector writes: one frame per exposure, flushed (SWMR)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.file: h5py.File | None = None
        self.path: Path | None = None
        self.count = 0
        self.frames_per_trigger = 1
        self.written, self._set_written = soft_signal_r_and_setter(int)
        self._base = frame(0, shape)

    def open(self, path: Path) -> None:
        self.file = h5py.File(path, "w", libver="latest")
        self.path = path
        self.dset = self.file.create_dataset(DATASET, shape=(0, *self.shape),
                                             maxshape=(None, *self.shape),
                                             chunks=(1, *self.shape), dtype="<i4")
        self.file.swmr_mode = True
        self.count = 0
        self._set_written(0)

    async def acquire(self) -> None:
        for _ in range(self.frames_per_trigger):
            self.dset.resize(self.count + 1, axis=0)
            self.dset[self.count] = frame(self.count, self.shape)
            self.dset.flush()
            self.count += 1
            self._set_written(self.count)
            await asyncio.sleep(0)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class _Trigger(DetectorTriggerLogic):
    def __init__(self, f: FrameFile) -> None:
        self.f = f

    async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
        self.f.frames_per_trigger = max(1, num)


class _Acquire(DetectorAcquireLogic):
    def __init__(self, f: FrameFile) -> None:
        self.f, self.task = f, None

    async def start_acquiring(self) -> None:
        self.task = asyncio.create_task(self.f.acquire())

    async def wait_for_idle(self) -> None:
        if self.task:
            await self.task

    async def ensure_stopped(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            self.task = None


class _Data(DetectorDataLogic):
    def __init__(self, f: FrameFile, path_provider: PathProvider) -> None:
        self.f, self.path_provider = f, path_provider

    async def prepare_unbounded(self, datakey_name: str) -> StreamResourceDataProvider:
        info = self.path_provider(datakey_name)
        self.f.open(Path(info.directory_path) / f"{info.filename}.h5")
        return StreamResourceDataProvider(
            uri=f"{info.directory_uri}{info.filename}.h5",
            resources=[StreamResourceInfo(data_key=datakey_name, shape=self.f.shape,
                                          chunk_shape=(1, *self.f.shape), dtype_numpy="<i4",
                                          parameters={"dataset": DATASET})],
            mimetype="application/x-hdf5", collections_written_signal=self.f.written)

    async def stop(self) -> None:
        self.f.close()

    def get_hinted_fields(self, datakey_name: str) -> list[str]:
        return [datakey_name]


class SaxsSimDetector(StandardDetector):
    def __init__(self, path_provider: PathProvider, shape: tuple[int, int], name: str = "") -> None:
        self.writer = FrameFile(shape)
        self.add_detector_logics(_Trigger(self.writer), _Acquire(self.writer),
                                 _Data(self.writer, path_provider))
        super().__init__(name=name)


def make_detector(directory: Path, shape: tuple[int, int], name: str = "det") -> SaxsSimDetector:
    """A connected detector writing into ``directory`` (after a RunEngine was made: it
    runs the event loop the device connects in)."""
    from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider, init_devices

    with init_devices():
        det = SaxsSimDetector(StaticPathProvider(UUIDFilenameProvider(), directory), shape,
                              name=name)
    return det


def ad_hdf5_detector(directory: Path, shape: tuple[int, int], name: str = "pil") -> object:
    """An ophyd v1 device as areaDetector's HDF5 plugin is seen by Bluesky: one HDF5 file
    per run, a Resource (spec ``AD_HDF5``) and a Datum per frame; frames :func:`frame`."""
    import itertools
    import uuid
    from collections import deque

    from ophyd import Component, Device, Signal
    from ophyd.sim import NullStatus

    class AdHdf5(Device):
        image = Component(Signal, kind="hinted")

        def stage(self) -> list[object]:
            self._file_name = f"{uuid.uuid4()}.h5"
            self._file = h5py.File(directory / self._file_name, "w")
            self._dset = self._file.create_dataset(DATASET, (0, *shape), maxshape=(None, *shape),
                                                   chunks=(1, *shape), dtype="<i4")
            self._resource, self._points = str(uuid.uuid4()), itertools.count()
            self._docs = deque([("resource", {
                "uid": self._resource, "spec": "AD_HDF5", "root": str(directory),
                "resource_path": self._file_name, "resource_kwargs": {"frame_per_point": 1},
                "path_semantics": "posix"})])
            return super().stage()

        def trigger(self) -> NullStatus:
            i = next(self._points)
            self._dset.resize(i + 1, axis=0)
            self._dset[i] = frame(i, shape)
            self._file.flush()
            datum_id = f"{self._resource}/{i}"
            self._docs.append(("datum", {"resource": self._resource, "datum_id": datum_id,
                                         "datum_kwargs": {"point_number": i}}))
            self.image.put(datum_id)
            return NullStatus()

        def describe(self) -> dict[str, dict[str, object]]:
            d = super().describe()
            d[self.image.name].update(shape=list(shape), dtype="array", dtype_numpy="<i4",
                                      external="FILESTORE:")
            return d

        def collect_asset_docs(self):  # noqa: ANN201 - ophyd's protocol
            while self._docs:
                yield self._docs.popleft()

        def unstage(self) -> list[object]:
            self._file.close()
            return super().unstage()

    return AdHdf5(name=name)


def filled_detector(shape: tuple[int, int], name: str = "img") -> object:
    """An ophyd v1 signal whose readings are the frames themselves (filled events)."""
    import itertools

    from ophyd.sim import SynSignal

    count = itertools.count()
    return SynSignal(name=name, func=lambda: frame(next(count), shape))
