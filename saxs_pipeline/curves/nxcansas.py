"""NXcanSAS files (NeXus application definition for reduced SAS data, v1.1) with h5py.

Layout (group names are the definition's suggestions; readers key on ``canSAS_class``)::

    /                         @default="sasentry01" @creator @file_name @file_time
      sasentry01              NXentry, canSAS_class=SASentry, @version="1.1", @default
        definition = "NXcanSAS";  title;  run (@name)
        sasdata01             NXdata, canSAS_class=SASdata, @signal="I"
          Q      (n_q,)       @units "1/nm" | "1/angstrom" | "1/m" [@resolutions="Qdev"]
          I      (n_q,) or (n_frames, n_q)   @units "arbitrary" | "1/cm" | "1/m"
                              @uncertainties="Idev"
          Idev   like I       same units;   Qdev like Q (when known)
          one curve:  @I_axes="Q", @Q_indices=0, @timestamp (when known)
          frames:     @I_axes=["Time", "Q"] (or ["Frame", "Q"] without times),
                      @Time_indices=0, @Q_indices=1; Time in s since the first frame
                      (@start ISO-8601), frame_name (n_frames,) the frame file names
        sasinstrument         SASinstrument: sasdetector (SDD, beam centre, pixel size),
                              sassource (probe x-ray, incident wavelength)
        sassample             SASsample: name, thickness (cm) when the calibration has it
        sasprocess            SASprocess: name, date, description, the calibration JSON,
                              software version and the caller's notes (all as text)

``layout="entries"`` writes one SASentry per frame instead (title = the frame name),
each with a 1-D SASdata; the instrument, sample and process groups of the first entry
are hard links in the others (same file, so not the external links the definition
forbids).

**SasView.** sasdata (SasView's loader, checked with 0.11) reads both layouts without
error, but reads a 2-D (frame, Q) ``I`` as n data sets that all hold the *last* frame
(its reader appends the same object once per frame). The stack layout is valid NXcanSAS
and h5py/nexusformat read it right; for SasView write ``layout="entries"``, which is what
:func:`export_stack` writes unless asked for the stack layout. sasdata
converts Q to 1/angstrom on load (value * 1e9 / 1e10 from 1/nm), keeps I in the file's
units and drops bins where Q, I or Idev is NaN (empty bins are written as NaN).
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

__all__ = ["I_UNITS", "Q_UNITS", "NXcanSASError", "export_run", "export_stack", "q_from_per_nm",
           "write_nxcansas"]

Q_UNITS = ("1/nm", "1/angstrom", "1/m")
I_UNITS = ("arbitrary", "1/cm", "1/m")
Layout = Literal["stack", "entries"]
PathLike = str | os.PathLike[str]

_STR = h5py.string_dtype()


class NXcanSASError(ValueError):
    """Curve data or metadata that cannot be written as NXcanSAS."""


def _software() -> str:
    try:
        return f"saxs_pipeline {metadata.version('saxs-pipeline')}"
    except metadata.PackageNotFoundError:
        return "saxs_pipeline"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _check(path, q, intensity, idev, qdev, frame_names, frame_times, q_units, i_units):
    where = f"NXcanSAS {os.fspath(path)}"
    if q_units not in Q_UNITS:
        raise NXcanSASError(f"{where}: Q units must be one of {Q_UNITS}, not {q_units!r}")
    if i_units not in I_UNITS:
        raise NXcanSASError(f"{where}: I units must be one of {I_UNITS}, not {i_units!r}")
    q = np.asarray(q, dtype=np.float64)
    i = np.asarray(intensity, dtype=np.float64)
    if q.ndim != 1 or q.size == 0:
        raise NXcanSASError(f"{where}: Q must be a non-empty 1-D array, not shape {q.shape}")
    if i.ndim not in (1, 2) or i.shape[-1] != q.size:
        raise NXcanSASError(f"{where}: I must be (n_q,) or (n_frames, n_q) with n_q = {q.size}, "
                            f"not shape {i.shape}")
    e = None if idev is None else np.asarray(idev, dtype=np.float64)
    if e is not None and e.shape != i.shape:
        raise NXcanSASError(f"{where}: Idev has shape {e.shape}, I {i.shape}")
    dq = None if qdev is None else np.asarray(qdev, dtype=np.float64)
    if dq is not None and dq.shape != q.shape:
        raise NXcanSASError(f"{where}: Qdev has shape {dq.shape}, Q {q.shape}")
    n = 1 if i.ndim == 1 else i.shape[0]
    names = None if frame_names is None else [str(s) for s in frame_names]
    if names is not None and len(names) != n:
        raise NXcanSASError(f"{where}: {len(names)} frame names for {n} frames")
    times = None if frame_times is None else np.asarray(frame_times, dtype=np.float64).reshape(-1)
    if times is not None and times.size != n:
        raise NXcanSASError(f"{where}: {times.size} frame times for {n} frames")
    return q, i, e, dq, names, times


def _field(group: h5py.Group, name: str, value: Any, /, **attrs: Any) -> h5py.Dataset:
    ds = group.create_dataset(name, data=value)
    for k, v in attrs.items():
        ds.attrs[k] = v
    return ds


def _classed(parent: h5py.Group, name: str, nx_class: str, cansas: str) -> h5py.Group:
    g = parent.create_group(name)
    g.attrs["NX_class"] = nx_class
    g.attrs["canSAS_class"] = cansas
    return g


def _sasdata(entry, q, i, e, dq, q_units, i_units, names, times, single_time) -> None:
    d = _classed(entry, "sasdata01", "NXdata", "SASdata")
    entry.attrs["default"] = "sasdata01"
    d.attrs["signal"] = "I"
    if i.ndim == 1:
        d.attrs["I_axes"] = "Q"
        d.attrs["Q_indices"] = np.int64(0)
        if single_time is not None and math.isfinite(single_time):
            d.attrs["timestamp"] = _iso(single_time)
    else:
        known = times is not None and bool(np.all(np.isfinite(times)))
        axis = "Time" if known else "Frame"
        d.attrs["I_axes"] = np.array([axis, "Q"], dtype=_STR)
        d.attrs[f"{axis}_indices"] = np.int64(0)
        d.attrs["Q_indices"] = np.int64(1)
        if known:
            _field(d, "Time", times - times[0], units="s", start=_iso(float(times[0])))
        else:
            _field(d, "Frame", np.arange(i.shape[0], dtype=np.int64), units="1")
        if names is not None:
            _field(d, "frame_name", np.array(names, dtype=_STR))
    qds = _field(d, "Q", q, units=q_units)
    ids = _field(d, "I", i, units=i_units)
    if e is not None:
        ids.attrs["uncertainties"] = "Idev"
        _field(d, "Idev", e, units=i_units)
    if dq is not None:
        qds.attrs["resolutions"] = "Qdev"
        qds.attrs["resolutions_description"] = "Bin"
        _field(d, "Qdev", dq, units=q_units)


def _metadata(entry: h5py.Group, title: str, calibration, process_notes) -> None:
    from saxs_pipeline.config.calibration import load_calibration

    sample = _classed(entry, "sassample", "NXsample", "SASsample")
    _field(sample, "name", title)
    process = _classed(entry, "sasprocess", "NXprocess", "SASprocess")
    _field(process, "name", "saxs_pipeline")
    _field(process, "date", datetime.now(UTC).isoformat(timespec="seconds"))
    _field(process, "description", "azimuthal integration of detector frames (saxs_pipeline)")
    _field(process, "software", _software())
    if calibration is not None:
        cal = load_calibration(dict(calibration))
        g = cal.geometry
        inst = _classed(entry, "sasinstrument", "NXinstrument", "SASinstrument")
        det = _classed(inst, "sasdetector", "NXdetector", "SASdetector")
        _field(det, "name", str(calibration.get("Title") or "area detector"))
        _field(det, "SDD", g.distance_mm, units="mm")
        # FIT2D's beam centre: pixels from the left (x) and bottom (y) detector edges.
        _field(det, "beam_center_x", g.beam_center_x * g.pixel_size_um[1] * 1e-3, units="mm")
        _field(det, "beam_center_y", g.beam_center_y * g.pixel_size_um[0] * 1e-3, units="mm")
        _field(det, "x_pixel_size", g.pixel_size_um[1], units="um")
        _field(det, "y_pixel_size", g.pixel_size_um[0], units="um")
        src = _classed(inst, "sassource", "NXsource", "SASsource")
        _field(src, "probe", "x-ray")  # v1.1: "radiation" is deprecated
        _field(src, "incident_wavelength", g.wavelength_a, units="angstrom")
        thickness = (calibration.get("Normalisation") or {}).get("Thickness")
        if isinstance(thickness, int | float) and not isinstance(thickness, bool):
            _field(sample, "thickness", float(thickness), units="cm")
        _field(process, "calibration", json.dumps(dict(calibration)))
    for name, value in (process_notes or {}).items():
        if name in process:
            raise NXcanSASError(f"process note {name!r} clashes with a SASprocess field")
        _field(process, name, value if isinstance(value, str) else json.dumps(value))


def _entry(root, name, title, run, run_name) -> h5py.Group:
    entry = _classed(root, name, "NXentry", "SASentry")
    entry.attrs["version"] = "1.1"
    _field(entry, "definition", "NXcanSAS")
    _field(entry, "title", title)
    _field(entry, "run", run, name=run_name)
    return entry


def write_nxcansas(
    path: PathLike,
    q: np.ndarray,
    intensity: np.ndarray,
    idev: np.ndarray | None = None,
    *,
    title: str,
    run: str,
    q_units: str = "1/nm",
    i_units: str = "arbitrary",
    qdev: np.ndarray | None = None,
    frame_names: Sequence[str] | None = None,
    frame_times: Sequence[float] | np.ndarray | None = None,
    calibration: Mapping[str, Any] | None = None,
    process_notes: Mapping[str, Any] | None = None,
    layout: Layout = "stack",
) -> Path:
    """Write one NXcanSAS file (module doc) and return its path. ``intensity`` is one
    curve ``(n_q,)`` or frames ``(n_frames, n_q)``; ``frame_times`` are seconds since
    1970 (NaN unknown); ``calibration`` the raw calibration dict. The file appears
    atomically (written under a temporary name, then renamed)."""
    if layout not in ("stack", "entries"):
        raise NXcanSASError(f"layout must be 'stack' or 'entries', not {layout!r}")
    q, i, e, dq, names, times = _check(path, q, intensity, idev, qdev, frame_names, frame_times,
                                       q_units, i_units)
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with h5py.File(tmp, "w") as root:
            root.attrs.update({"NX_class": "NXroot", "default": "sasentry01",
                               "creator": _software(), "file_name": target.name,
                               "file_time": datetime.now(UTC).isoformat(timespec="seconds")})
            if layout == "stack" or i.ndim == 1:
                entry = _entry(root, "sasentry01", title, run, run)
                t0 = None if times is None else float(times[0])
                _sasdata(entry, q, i, e, dq, q_units, i_units, names, times, t0)
                _metadata(entry, title, calibration, process_notes)
            else:
                width = max(2, len(str(i.shape[0])))
                first = None
                for f in range(i.shape[0]):
                    label = names[f] if names is not None else f"frame {f}"
                    entry = _entry(root, f"sasentry{f + 1:0{width}d}", f"{title} {label}", run, label)
                    _sasdata(entry, q, i[f], None if e is None else e[f], dq, q_units, i_units,
                             None, None, None if times is None else float(times[f]))
                    if first is None:
                        first = entry
                        _metadata(entry, title, calibration, process_notes)
                    else:
                        for group in ("sasinstrument", "sassample", "sasprocess"):
                            if group in first:
                                entry[group] = first[group]
                root.attrs["default"] = f"sasentry{1:0{width}d}"
        os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    return target


def q_from_per_nm(q: np.ndarray, units: str) -> np.ndarray:
    """q given in 1/nm (the pipeline's unit) expressed in ``units`` (one of Q_UNITS)."""
    scale = {"1/nm": 1.0, "1/angstrom": 0.1, "1/m": 1e9}
    if units not in scale:
        raise NXcanSASError(f"Q units must be one of {Q_UNITS}, not {units!r}")
    return np.asarray(q, dtype=np.float64) * scale[units]


def export_stack(
    stack: PathLike,
    out: PathLike,
    *,
    key: str = "R0",
    indices: str | Sequence[int] | None = None,
    patterns: Sequence[str] | None = None,
    q_units: str = "1/nm",
    layout: Layout = "entries",
    title: str | None = None,
) -> Path:
    """Write the selected frames of curve ``key`` of a zarr curve stack as NXcanSAS
    (intensity in counts per pixel, "arbitrary"; error the Poisson column), in acquisition
    order: ``indices`` are positions in that order, ``patterns`` match frame names
    (:mod:`saxs_pipeline.stack.select`). ``layout`` "entries" (one SASentry per frame,
    what SasView reads whole) or "stack" (one 2-D I(frame, Q))."""
    from saxs_pipeline.stack.select import load_curves

    curves = load_curves(stack, key, indices=indices, patterns=patterns)
    if curves.axis_units != "1/nm":
        raise NXcanSASError(f"curve {key} has a {curves.axis_units} axis, not q: only radial "
                            "curves can be written as NXcanSAS")
    name = Path(os.fspath(stack)).name
    one = len(curves.rows) == 1
    # curves on the absolute scale are in 1/cm; others in the detector's counts per pixel
    scale = (curves.calibration or {}).get("Normalisation", {}).get("AbsoluteScale")
    return write_nxcansas(
        out, q_from_per_nm(curves.q, q_units),
        curves.intensity[0] if one else curves.intensity,
        curves.error[0] if one else curves.error,
        i_units="1/cm" if scale is not None else "arbitrary",
        title=title or (curves.names[0] if one else name), run=name, q_units=q_units,
        frame_names=curves.names, frame_times=curves.image_time,
        calibration=curves.calibration,
        process_notes={"source": f"{os.fspath(stack)} curve {key}", "frames": curves.names},
        layout=layout,
    )


def export_run(stack: PathLike, curves: Sequence[Any], layout: Layout) -> list[Path]:
    """A run's radial curves (``Curve`` templates) as NXcanSAS beside its stack:
    ``<name>.h5`` for the first mask entry, ``<name><suffix>.h5`` for the others."""
    out = Path(os.fspath(stack)).with_suffix(".h5")
    return [export_stack(stack, out if c.calnum == 0 else out.with_name(f"{out.stem}{c.suffix()}.h5"),
                         key=c.key, layout=layout)
            for c in curves if c.kind == "Radial" and not c.phi]
