"""Generated demo data, so everything can be tried without a detector: :mod:`.beamtime` (a
Pilatus 1M-like beamtime: calibration, mask, AgBh calibrant, a series of TIFFs),
:mod:`.eiger` (EIGER-like NeXus/HDF5 containers), :mod:`.detector` (frames written into a
watched folder at a detector's rate) and :mod:`.run` (``./run demo``: the whole system on
a demo beamtime).
"""
