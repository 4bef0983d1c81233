"""Integrated curves as files: :mod:`.chi` (the original's ``.chi``; :mod:`.chiformat` its
fast number formatting), :mod:`.nxcansas` (NXcanSAS for SasView) and :mod:`.plot`
(matplotlib drawing of curves with error bands).
"""
