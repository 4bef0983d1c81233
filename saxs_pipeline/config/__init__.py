"""What a run is configured with: the calibration and everything it names.

:mod:`.calibration` (the JSON schemas in ``schemas/`` and their parsing into typed values),
:mod:`.fit2d` (``saxsconverter``: FIT2D logs and NeXus masters to a calibration),
:mod:`.nexus` (geometry from a NeXus master), :mod:`.masks`, :mod:`.darkflat` (dark and flat
images), :mod:`.normalisation` (per-frame monitor, transmission, ...), :mod:`.wedges` and
:mod:`.docgen` (the calibration file reference, ``docs/calibration.md``).
"""
