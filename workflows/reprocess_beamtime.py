"""Reprocess a whole beamtime on a Dask cluster: every frame under ROOT becomes its .chi
files and a row of the curve stack; a summary goes to stdout and beside the outputs.

    python workflows/reprocess_beamtime.py -c cal.json --scheduler tcp://head:8786 ROOT
    python workflows/reprocess_beamtime.py -c cal.json --scheduler-file sched.json ROOT
    python workflows/reprocess_beamtime.py -c cal.json ROOT          # local cluster

The cluster: ``dask scheduler --preload saxs_pipeline.stats`` on one node and
``saxs-worker --scheduler-file sched.json --calibration cal.json`` (or ``dask
saxs-worker``) on every node; frames and outputs must be on a file system all of them see.
With ``--per-directory`` every immediate sub-directory of ROOT with frames somewhere below
it gets its own queue and curve stack (one per sample, say); otherwise ROOT is one queue.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import dask
from distributed import Client, LocalCluster

from saxs_pipeline.cli.progress import show_progress
from saxs_pipeline.pipeline.cluster import embedded_cluster_options
from saxs_pipeline.pipeline.frames import matches
from saxs_pipeline.pipeline.queue import ImageQueue
from saxs_pipeline.plugins.stats import scheduler_stats
from saxs_pipeline.plugins.workerconfig import worker_config

log = logging.getLogger("reprocess")


def frame_directories(root: Path, pattern: str) -> list[Path]:
    """The immediate sub-directories of ``root`` with frames somewhere below them."""

    def has_frames(folder: Path) -> bool:
        return any(matches(f, pattern) for _, _, files in os.walk(folder) for f in files)

    if any(matches(p.name, pattern) for p in root.iterdir() if p.is_file()):
        log.warning("frames directly in %s are not processed with --per-directory", root)
    return [d for d in sorted(root.iterdir()) if d.is_dir() and has_frames(d)]


def reprocess(client: Client, calibration: Path, directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One queue over ``directory``: walk, integrate, close; its summary."""
    t0 = time.perf_counter()
    queue = ImageQueue(client, calibration, directory, out_dir=args.out_dir, pattern=args.pattern,
                       resume=args.resume, batch_size=args.batch_size)
    queue.start()
    queue.readdir()
    show_progress(queue, silent=args.quiet)
    stats = queue.close()
    elapsed = time.perf_counter() - t0
    return {
        "directory": str(directory),
        "frames": stats["images processed"],
        "failed": stats["failed"],
        "seconds": round(elapsed, 2),
        "frames_per_second": round(stats["images processed"] / elapsed, 1) if elapsed else 0.0,
        "curve_stack": str(queue.zarr_path),
        "outputs": str(queue.outputs_dir),
        "failures_log": str(queue.failures_log) if stats["failed"] else None,
        "cluster_stats": scheduler_stats(client, queue.queue_id)["queues"].get(queue.queue_id),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="beamtime directory")
    p.add_argument("-c", "--calibration", type=Path, required=True)
    p.add_argument("--scheduler", help="scheduler address (default: a local cluster)")
    p.add_argument("--scheduler-file", type=Path)
    p.add_argument("-t", "--threads", type=int, default=2, help="local cluster workers (2)")
    p.add_argument("-o", "--out-dir", type=Path, help="flat output directory (default: ../work)")
    p.add_argument("--pattern", default="*.tif")
    p.add_argument("--per-directory", action="store_true", help="one queue per frame folder")
    p.add_argument("-r", "--resume", action="store_true", help="skip frames already done")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("distributed").setLevel(logging.WARNING)

    if not args.root.is_dir():
        print(f"reprocess: {args.root} is not a directory", file=sys.stderr)
        return 2
    directories = frame_directories(args.root, args.pattern) if args.per_directory else [args.root]
    if args.scheduler or args.scheduler_file:
        client = Client(args.scheduler, scheduler_file=args.scheduler_file and str(args.scheduler_file),
                        timeout=30)
        cluster = None
    else:
        with dask.config.set(worker_config()):
            cluster = LocalCluster(**embedded_cluster_options(args.threads))
        client = Client(cluster)
    try:
        results = [reprocess(client, args.calibration, d, args) for d in directories]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    summary = {
        "root": str(args.root),
        "calibration": str(args.calibration),
        "queues": results,
        "frames": sum(r["frames"] for r in results),
        "failed": sum(r["failed"] for r in results),
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if results:
        path = Path(results[0]["outputs"]) / "reprocess-summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        log.info("summary written to %s", path)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
