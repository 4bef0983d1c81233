"""``saxsdog``'s command line: its options (the manual's plus ours), parsed into
:class:`Options`; running them is :mod:`saxs_pipeline.cli.saxsdog`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from saxs_pipeline.pipeline.naming import DEFAULT_RELPATH
from saxs_pipeline.stream.messages import DEFAULT_MAX_IMAGES

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_LOST", "EXIT_NO_SPACE", "EXIT_OK",
           "EXIT_SCHEDULER", "EXIT_STREAM", "EXIT_USAGE", "Options", "StartupError", "build_parser",
           "demo_parser", "options_from", "parse_args", "startup_calibration"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SCHEDULER, EXIT_LOST = 0, 1, 2, 3, 4
EXIT_NO_SPACE = 5  # the output disk is full: the run stopped, --resume completes it
EXIT_STREAM = 6  # the stream receiver stopped by itself
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Options:
    directory: Path
    calibration: Path
    files: tuple[Path, ...] = ()
    threads: int | None = None
    plot: bool = False
    watch: bool = False
    resume: bool = False
    out_dir: Path | None = None
    relpath: str = DEFAULT_RELPATH
    svg: bool = False
    png: bool = False
    profile: bool = False
    silent: bool = False
    no_walk: bool = False
    walk_thread: bool = False
    scheduler: str | None = None
    scheduler_file: Path | None = None
    connect_timeout: float = 10.0
    reconnect_timeout: float = 120.0
    zarr: Path | None = None
    pattern: str = "*.tif"
    poll: bool = False
    batch_size: int = 32
    retries: int = 5
    std: bool = False
    no_chi: bool = False
    h5_path: str | None = None
    stream: str | None = None
    stream_idle: float = 5.0
    stream_max_images: int = DEFAULT_MAX_IMAGES
    nxcansas: str | None = None
    verbose: int = 0
    linger: float = 0.0  # seconds the cluster stays up after the run
    path_map: tuple[str, ...] = ()
    allow_data_root: tuple[Path, ...] = ()  # where HDF5 links may lead besides the directory
    argv: tuple[str, ...] = ()  # as given: the command a message tells to run again
    bluesky: str | None = None  # a Bluesky 0MQ proxy's out address
    bluesky_field: str | None = None
    bluesky_idle: float = 120.0
    bluesky_override: str | None = None  # "energy=KEY,distance=KEY" of the runs' starts
    calibrations: Path | None = None  # the folder of calibrations runs name by id
    tiled: str | None = None


def _common(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("-c", "--calibration", type=Path, default=Path("cal.json"),
      help="calibration JSON (default: cal.json)")
    a("-t", "--threads", type=int, default=None,
      help="worker processes of the embedded cluster (default: the calibration's Threads)")
    a("-m", "--plot", action="store_true",
      help="live plot of the latest frame (a window, or live.png beside the run's .chi files "
      "without a display)")
    a("-w", "--watch", action="store_true", help="keep watching the directory for new frames")
    a("-r", "--resume", action="store_true",
      help="take only frames the run's ledger does not have as done (also after a crash)")
    a("-o", "--outdir", dest="out_dir", type=Path, default=None,
      help="write all outputs into OUTDIR, frame paths flattened into the file names")
    a("-R", "--relpath", default=None,
      help=f"outputs folder relative to the directory (default: {DEFAULT_RELPATH}; with "
      "--stream: the directory itself)")
    a("-i", "--inplace", action="store_true", help="write the outputs next to the images")
    a("-s", "--svg", action="store_true", help="also write an SVG plot per frame")
    a("-p", "--png", action="store_true", help="also write a PNG of every frame")
    a("-P", "--profile", action="store_true", help="profile the driver into the file 'prof'")
    a("-S", "--silent", action="store_true", help="no progress bar, warnings only")
    a("-n", "--no-walk", action="store_true", help="do not process the frames already there")
    a("-D", "--walk-thread", action="store_true",
      help="walk the directory in the background (with -w: watch at once)")
    a("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    a("--scheduler", default=None, metavar="ADDRESS",
      help="Dask scheduler to use, e.g. tcp://host:8786 (default: an embedded local cluster)")
    a("--scheduler-file", type=Path, default=None, help="Dask scheduler file to connect with")
    a("--connect-timeout", type=float, default=10.0, help="seconds to reach the scheduler (10)")
    a("--reconnect-timeout", type=float, default=120.0,
      help="seconds to wait for a lost scheduler to come back before giving up (120)")
    a("--path-map", action="append", default=[], metavar="DRIVER_PREFIX=WORKER_PREFIX",
      help="the workers see files under DRIVER_PREFIX at WORKER_PREFIX (frames they read, "
      ".chi files they write); repeatable")
    a("--zarr", type=Path, default=None,
      help="curve stack path (default: <outputs>/<directory name>.zarr)")
    a("--pattern", default="*.tif", help="frame file name pattern, any case (default: *.tif)")
    a("--poll", action="store_true",
      help="with -w: poll the directory (network file systems) instead of inotify")
    a("--batch-size", type=int, default=32, help="frames per task for the walk (32)")
    a("--retries", type=int, default=5, help="retries of a frame still being written (5)")
    a("--std", action="store_true",
      help="also compute the per-bin standard deviation for the curve stack (slower)")
    a("--no-chi", action="store_true", help="write no .chi files, only the curve stack")
    a("--h5-path", default=None, metavar="DATASET",
      help="the 3-D dataset of plain HDF5 files (default: the EIGER master layout, else "
      "/entry/data/data); use with --pattern '*.h5'")
    a("--allow-data-root", action="append", type=Path, default=[], metavar="DIR",
      help="HDF5 external links and virtual datasets may lead into DIR besides the run's "
      "directory (repeatable); links elsewhere fail their frames")
    a("--stream", default=None, metavar="URL",
      help="receive frames from a DECTRIS Stream V2 (ZeroMQ PUSH) at URL, e.g. "
      "tcp://dcu:31001; one series, or every series with -w. DIRECTORY is the outputs "
      "folder (created if missing): DIRECTORY/<name>.zarr, its ledger, failures.log and "
      "the .chi files under DIRECTORY/stream/")
    a("--nxcansas", action="store_true",
      help="at the end, also write the run's curves as NXcanSAS (<stack>.h5)")
    a("--nxcansas-layout", choices=("entries", "stack"), default="entries",
      help="one entry per frame (SasView reads these; the default) or one 2-D I(frame, Q)")
    a("--stream-idle", type=float, default=5.0,
      help="seconds of silence after which a series without its end message is over (5)")
    a("--stream-max-images", type=int, default=DEFAULT_MAX_IMAGES, metavar="N",
      help="the most images one series may hold: image numbers beyond it (or beyond the "
      f"series' announced count) fail ({DEFAULT_MAX_IMAGES:,})")
    a("--bluesky", default=None, metavar="URL",
      help="reduce the runs of a Bluesky RunEngine: the documents from a bluesky-0MQ-proxy's "
      "out address, e.g. tcp://host:5578 (msgpack or JSON: Publisher(..., serializer="
      "saxs_pipeline.bluesky.wire.pack)); one folder and curve stack per run in DIRECTORY; "
      "a run's calibration is its start's saxs_calibration (a path or an id of "
      "--calibrations), else -c")
    a("--bluesky-field", default=None, metavar="NAME",
      help="the image field of the runs (default: the first field of 2 or more dimensions)")
    a("--bluesky-idle", type=float, default=120.0, metavar="SECONDS",
      help="a run without a document for this long and no stop document is closed (120)")
    a("--calibrations", type=Path, default=None, metavar="DIR",
      help="calibrations runs may name by id: saxs_calibration 'ID' is DIR/ID.json")
    a("--bluesky-override", default=None, metavar="energy[=KEY],distance[=KEY]",
      help="take the beam energy (keV) and the sample-detector distance (mm) from these "
      "keys of each run's start metadata instead of the calibration's Wavelength and "
      "distance (recorded as GeometryOverride in the run's calibration); default: never")
    a("--tiled", default=None, metavar="URL",
      help="publish each reduced run to this Tiled server as it goes (API key from "
      "TILED_API_KEY)")
    a("--linger", type=float, default=0.0, metavar="SECONDS",
      help="keep the cluster (and its live SAXS page) up this long after the run, for a "
      "person to look (default: 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saxsdog",
        description="Integrate SAXS detector frames into .chi curves and a zarr curve stack. "
        "'saxsdog demo [DIR]' generates a demo beamtime and reduces it; 'saxsdog calibrate', "
        "'saxsdog mask' and 'saxsdog check' set up a new experiment from a calibrant frame; "
        "'saxsdog cache list|clear' shows or empties the operator cache.",
        epilog="exit status: 0 done, 1 some frames failed (failures.log), 2 bad start-up "
        "input, 3 scheduler unreachable, 4 the cluster was lost, 5 the output disk is full "
        "(free space, then rerun with --resume), 130 interrupted (--resume completes the run)",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="DIRECTORY | FILE",
                        help="directory of frames (searched recursively), or frame files")
    _common(parser)
    return parser


def demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saxsdog demo", description="Generate the demo beamtime in DIR/demo and reduce it.")
    parser.add_argument("root", nargs="?", type=Path, default=Path("demo-output"),
                        help="where to create demo/ (default: demo-output)")
    parser.add_argument("--frames", "-N", type=int, default=50, help="sample frames (50)")
    parser.add_argument("--eiger", action="store_true",
                        help="an EIGER2 X 4M-like set instead: a master file and two data files "
                        "of bitshuffle-LZ4 frames (DIR/eiger), reduced with --pattern '*_master.h5'")
    _common(parser)
    return parser


class StartupError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def startup_calibration(path: Path) -> Any:
    """The calibration at ``path``, parsed and within the memory budget, or a
    StartupError saying what is wrong with it (before any cluster starts)."""
    from saxs_pipeline.config.calibration import load_calibration
    from saxs_pipeline.config.calibschema import CalibrationError
    from saxs_pipeline.ops.budget import check_budget

    try:
        cal = load_calibration(path)
        check_budget(cal)
    except CalibrationError as exc:
        raise StartupError(f"bad calibration: {exc}") from None
    return cal


def _targets(paths: Sequence[Path]) -> tuple[Path, tuple[Path, ...]]:
    """(run directory, explicit files): one directory, or files of one directory tree."""
    if len(paths) == 1 and paths[0].is_dir():
        return paths[0], ()
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise StartupError(f"{missing[0]} does not exist")
    dirs = [p for p in paths if p.is_dir()]
    if dirs:
        raise StartupError(f"{dirs[0]} is a directory: give one directory, or frame files")
    files = tuple(p.absolute() for p in paths)
    return Path(os.path.commonpath([f.parent for f in files])), files


def _relpath(ns: argparse.Namespace) -> str:
    """The outputs folder relative to the run's directory: ``-i`` the directory itself,
    ``-R`` as given, else ``../work`` beside a data folder. A stream's DIRECTORY holds no
    frames, only what the run writes: it is the outputs folder itself (as each Bluesky
    run's folder is), so ``saxsdog --stream URL streamed/`` writes into ``streamed/``."""
    if ns.inplace:
        return os.curdir
    if ns.relpath is not None:
        return str(ns.relpath)
    return os.curdir if ns.stream else DEFAULT_RELPATH


def options_from(ns: argparse.Namespace, directory: Path, calibration: Path,
                 files: tuple[Path, ...] = ()) -> Options:
    """The run's options from the parsed arguments, for ``directory`` (and ``files``)."""
    return Options(
        directory=directory, calibration=calibration, files=files, threads=ns.threads,
        plot=ns.plot, watch=ns.watch, resume=ns.resume, out_dir=ns.out_dir,
        relpath=_relpath(ns), svg=ns.svg, png=ns.png,
        profile=ns.profile, silent=ns.silent, no_walk=ns.no_walk, walk_thread=ns.walk_thread,
        scheduler=ns.scheduler, scheduler_file=ns.scheduler_file,
        connect_timeout=ns.connect_timeout, reconnect_timeout=ns.reconnect_timeout,
        zarr=ns.zarr, pattern=ns.pattern, poll=ns.poll, batch_size=ns.batch_size,
        retries=ns.retries, std=ns.std, no_chi=ns.no_chi, h5_path=ns.h5_path,
        stream=ns.stream, stream_idle=ns.stream_idle, stream_max_images=ns.stream_max_images,
        nxcansas=ns.nxcansas_layout if ns.nxcansas else None,
        verbose=ns.verbose, linger=ns.linger, path_map=tuple(ns.path_map),
        allow_data_root=tuple(ns.allow_data_root),
        bluesky=ns.bluesky, bluesky_field=ns.bluesky_field, bluesky_idle=ns.bluesky_idle,
        bluesky_override=ns.bluesky_override, calibrations=ns.calibrations, tiled=ns.tiled,
    )


def parse_args(argv: Sequence[str]) -> Options:
    ns = build_parser().parse_args(argv)
    if len(ns.paths) == 1 and not ns.paths[0].exists():
        opts = options_from(ns, ns.paths[0], ns.calibration)  # reported by run()
    else:
        directory, files = _targets(ns.paths)
        opts = options_from(ns, directory, ns.calibration, files)
    return replace(opts, argv=tuple(argv))
