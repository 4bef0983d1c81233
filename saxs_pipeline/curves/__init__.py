"""Integrated curves as files: :mod:`.chi` (the original's ``.chi``; :mod:`.chiformat` its
fast number formatting), :mod:`.nxcansas` (NXcanSAS for SasView), :mod:`.plot`
(matplotlib drawing of curves with error bands) and :mod:`.calibplot` (pictures of a
calibration check and of a data mask).
"""
