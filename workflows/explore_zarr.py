# %% [markdown]
# # Exploring a curve stack with xarray
#
# Every queue writes one zarr curve stack: one row per frame with the curves of every
# mask and slice, the integral parameters, the frame file name and its times. This
# notebook opens one with xarray, plots I(q) over the frames and I0 over time, and saves
# the figures as PNG. Run it cell by cell (VS Code, Jupyter with jupytext) or as a script:
#
#     python workflows/explore_zarr.py [STACK.zarr] [--out DIR]
#
# Without a path it uses the newest stack of the demo (`saxsdog demo` writes
# `demo-output/demo/work/data.zarr`, `./run demo` `demo-output/demo/work/live.zarr`). The
# stack may still be growing: readers slice to the `n_valid` rows the writer has
# committed, and `open_dataset` puts them in acquisition order.

# %%
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; drop this line in a live notebook
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import zarr  # noqa: E402

from saxs_pipeline.stack.read import open_dataset  # noqa: E402

DEMO = Path("demo-output/demo/work")
parser = argparse.ArgumentParser(description="Plot a saxs_pipeline curve stack.")
parser.add_argument("stack", nargs="?", type=Path, default=None,
                    help="the stack (default: the newest one in demo-output/demo/work)")
parser.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: beside the stack)")
parser.add_argument("--key", default="R0", help="curve to plot (R0 = first radial mask)")
args, _ = parser.parse_known_args(sys.argv[1:] if __name__ == "__main__" else [])
KEY = args.key
demo_stacks = sorted(DEMO.glob("*.zarr"), key=lambda p: p.stat().st_mtime) if DEMO.is_dir() else []
STACK = args.stack or (demo_stacks[-1] if demo_stacks else DEMO / "data.zarr")
OUT = args.out or STACK.parent
OUT.mkdir(parents=True, exist_ok=True)
if not (STACK / "zarr.json").exists():
    sys.exit(f"no curve stack at {STACK}: run `saxsdog demo` or give a path")

# %% [markdown]
# ## Open the stack
#
# The root group holds the per-frame arrays (source file, frame index in it, detector
# time, processing time); every curve has its own group ("R0", "R1", "S2", ...) with its
# axis, I, the Poisson error, the standard deviation and I0/I1/I2. `open_dataset` joins
# them, keeps the committed rows and sorts them by file name and frame index (rows are
# stored in completion order). Times decode to datetime64 via their CF units.

# %%
root = zarr.open_group(STACK, mode="r", use_consolidated=False)
print(f"{STACK}: {int(root.attrs['n_valid'])} frames, curves {root.attrs['curve_keys']}")
ds = open_dataset(STACK, KEY)
curves = root[KEY]
print(ds)

# %% [markdown]
# ## I(q) over the frames
#
# A map of log intensity (frames x q) and a few curves from the start, middle and end.

# %%
axis = curves.attrs.get("axis_name") or [d for d in ds["I"].dims if d != "frame"][0]
intensity = ds["I"].where(ds["I"] > 0)
fig, (ax_map, ax_curves) = plt.subplots(1, 2, figsize=(12, 4.5))
mesh = ax_map.pcolormesh(ds[axis].values, np.arange(ds.sizes["frame"]),
                         np.log10(intensity.values), shading="auto")
fig.colorbar(mesh, ax=ax_map, label="log10 I [counts/pixel]")
ax_map.set_xlabel(f"{axis} [{ds[axis].attrs.get('units', '')}]")
ax_map.set_ylabel("frame (acquisition order)")
ax_map.set_xscale("log")
picks = sorted({0, ds.sizes["frame"] // 2, ds.sizes["frame"] - 1})
for i in picks:
    row = ds.isel(frame=i)
    ax_curves.plot(row[axis], row["I"], lw=0.8, label=str(row["filename"].values))
    ax_curves.fill_between(row[axis], row["I"] - row["poisson"], row["I"] + row["poisson"],
                           alpha=0.2)
ax_curves.set_xscale("log")
ax_curves.set_yscale("log")
ax_curves.set_xlabel(ax_map.get_xlabel())
ax_curves.set_ylabel("I [counts/pixel]")
ax_curves.legend(fontsize=7)
fig.tight_layout()
fig.savefig(OUT / f"{KEY}_iq_over_frames.png", dpi=120)

# %% [markdown]
# ## I0 over time
#
# The integral parameter I0 = sum of I dq over the calibration's q window, against the
# detector's timestamp (the Pilatus header date): the quantity beamline users watch
# during a time series.

# %%
fig, ax = plt.subplots(figsize=(8, 3.5))
ax.plot(ds["image_time"].values, ds["I0"].values, ".-", ms=3, lw=0.7)
ax.set_xlabel("image time (detector clock, UTC)")
ax.set_ylabel(f"I0 [{ds['I0'].attrs.get('units', '')}]")
fig.autofmt_xdate()
fig.tight_layout()
fig.savefig(OUT / f"{KEY}_I0_over_time.png", dpi=120)
print(f"figures written to {OUT}")
