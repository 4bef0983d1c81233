"""The Pilatus text header of a TIFF frame (its ImageDescription), parsed into a dict:
the format is described in :mod:`saxs_pipeline.frames.tiff`."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import tifffile

__all__ = ["header_of", "iso_to_timestamp", "parse_description"]



_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUM_RE = re.compile(rf"^({_NUM})(?:\s+(\S+))?$")
_PAIR_X_RE = re.compile(rf"^({_NUM})\s*(\S*)\s+x\s+({_NUM})\s*(\S*)$")
_PAIR_PAREN_RE = re.compile(rf"^\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*(\S*)$")
_ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?$")
_KEY_VALUE_RE = re.compile(r"^(.*?)(?::\s|\s=\s|:$|\s=$)(.*)$")
_FIRST_NUMBER_RE = re.compile(rf"\s(?=[(]?{_NUM}(?:\s|,|\)|$))")


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _parse_value(key: str, value: str, out: dict[str, Any]) -> None:
    value = value.strip()
    if m := _NUM_RE.match(value):
        out[key] = _number(m[1])
        if m[2]:
            out[f"{key}_unit"] = m[2]
    elif (m := _PAIR_X_RE.match(value)) and (not m[2] or not m[4] or m[2] == m[4]):
        out[key] = (float(m[1]), float(m[3]))
        if m[2] or m[4]:
            out[f"{key}_unit"] = m[2] or m[4]
    elif m := _PAIR_PAREN_RE.match(value):
        out[key] = (float(m[1]), float(m[2]))
        if m[3]:
            out[f"{key}_unit"] = m[3]
    else:
        out[key] = value


def parse_description(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("#"):
            continue
        line = line.lstrip("#").strip()
        if not line:
            continue
        if _ISO_RE.match(line):
            out["date"] = line
            continue
        # "key: value" and "key = value" name their separator; "key value" does not, so
        # the key is the text up to the first number ("Silicon sensor, thickness 0.00045 m").
        if m := _KEY_VALUE_RE.match(line):
            key, value = m[1], m[2]
        elif m := _FIRST_NUMBER_RE.search(line):
            key, value = line[: m.start()], line[m.end() :]
        else:
            key, _, value = line.partition(" ")
        key = key.strip().rstrip(":=,").strip()
        if key:
            _parse_value(key, value, out)
    return out


def iso_to_timestamp(iso: str) -> float | None:
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # the detector clock has no zone: take it as UTC
    return when.timestamp()


def header_of(tif: tifffile.TiffFile) -> dict[str, Any]:
    page = tif.pages.first
    desc = page.tags.get(270)
    text = desc.value if desc is not None else ""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    header = parse_description(text)
    if "date" not in header:
        tag = page.tags.get(306)  # DateTime, 'YYYY:MM:DD hh:mm:ss'
        value = tag.value if tag is not None else None
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        m = re.match(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}:\d{2}:\d{2})", value or "")
        header["date"] = f"{m[1]}-{m[2]}-{m[3]}T{m[4]}" if m else None
    header["time"] = iso_to_timestamp(header["date"]) if header["date"] else None
    return header


