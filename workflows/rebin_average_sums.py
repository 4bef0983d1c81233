# %% [markdown]
# # Re-binning and averaging from the stored sums
#
# A mask entry with `"StoreSums": true` keeps, per frame and bin, the sums the curve is
# made of (`sum_signal` = sum W x, `sum_variance` = sum W^2 x, `sum_norm` = sum A,
# `count`). From them, without the images:
#
# * frames are **averaged** exactly: add their sums, divide (the same as integrating the
#   averaged image);
# * neighbouring bins are **merged** exactly: add the sums of every `factor` bins (the
#   same as integrating onto the coarser grid with point splitting).
#
# Run it cell by cell or as a script:
#
#     python workflows/rebin_average_sums.py STACK.zarr [--key R0] [--factor 2] [--frames 10] [--out FILE]
#
# It writes the averaged, re-binned curve as a three-column text file (q, I, error).

# %%
import argparse
import sys
from pathlib import Path

import numpy as np

from saxs_pipeline.ops.sums import BinSums, average_sums, curve_from_sums, rebin
from saxs_pipeline.stack.layout import SUM_ARRAYS
from saxs_pipeline.stack.read import read_stack

parser = argparse.ArgumentParser(description="Average and re-bin curves from a stack's stored sums.")
parser.add_argument("stack", type=Path, help="a curve stack with StoreSums")
parser.add_argument("--key", default="R0", help="the curve (R0 = first radial mask)")
parser.add_argument("--factor", type=int, default=2, help="merge this many neighbouring bins")
parser.add_argument("--frames", type=int, default=10, help="average the first N frames (acquisition order)")
parser.add_argument("--out", type=Path, default=None, help="text file (default: beside the stack)")
args, _ = parser.parse_known_args(sys.argv[1:] if __name__ == "__main__" else [])

# %% The sums of the first frames, in acquisition order
stack = read_stack(args.stack)
curve = stack["curves"][args.key]
missing = [name for name in SUM_ARRAYS if name not in curve]
if missing:
    raise SystemExit(f"{args.stack}: curve {args.key} has no stored sums (set StoreSums in its mask entry)")
rows = stack["order"][: args.frames]
sums = BinSums(*(np.asarray(curve[name])[rows] for name in SUM_ARRAYS))
print(f"{args.key}: {len(rows)} frames x {sums.nbins} bins")

# %% Average the frames, then merge bins
averaged = rebin(average_sums(sums), args.factor)
result = curve_from_sums(averaged)
# The stored axis holds bin centres: on a uniform grid the coarse centres are the means of
# every `factor` fine ones (ops.sums.coarse_edges gives the coarse edges from fine edges).
q = curve["axis"][: averaged.nbins * args.factor].reshape(-1, args.factor).mean(axis=1)

# %% Write q, I and the propagated Poisson error of the average
out = args.out or args.stack.with_name(f"{args.stack.stem}_{args.key}_avg{len(rows)}_x{args.factor}.txt")
np.savetxt(out, np.column_stack([q, result.mean, result.sigma]),
           header=f"q [{curve['axis_units']}]  I  sigma  ({len(rows)} frames, bins merged by {args.factor})")
print(f"wrote {out}")
