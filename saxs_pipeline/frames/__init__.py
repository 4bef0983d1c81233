"""Frame sources: detector files in, ``(n, rows, cols)`` arrays and per-frame metadata out.

:mod:`.source` (the interface every reader offers and the errors they raise), :mod:`.registry`
(which reader a path needs: :func:`~saxs_pipeline.frames.registry.open_frames`), the readers
:mod:`.tiff` (TIFF with the Pilatus header, also written for demos and tests),
:mod:`.hdf5` (EIGER/PILATUS4 NeXus masters and plain HDF5), :mod:`.fabioformats` (CBF, EDF
and fabio's other formats), and their helpers :mod:`.pilatusheader` and :mod:`.compression`.
"""
