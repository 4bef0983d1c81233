"""The zarr curve stack of a run: one row per frame, written once by the driver.

:mod:`.layout` (the arrays and their attributes), :mod:`.create` (a new stack or a continued
one), :mod:`.writer` (rows buffered and flushed, committed with the ledger), :mod:`.rows`
(which rows hold committed frames), :mod:`.read` (:func:`~saxs_pipeline.stack.read.open_dataset`:
an xarray Dataset in acquisition order), :mod:`.select` (frames chosen by order or name)
and :mod:`.reduction` (average a sample's frames, subtract a buffer, write the result).
"""
