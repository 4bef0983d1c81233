"""Replies to the original's clients carry exactly the keys the original knew.

The original ``saxsleash`` validates every reply against its LeashResultSchema, where
``data`` and ``data.stat`` have ``additionalProperties: false`` (original.md 6.6): one key
more and it rejects the reply. So a v1-signed request (the original's scheme, which only
the original's clients and our compatible ones use) gets its reply trimmed to those keys;
v2 requests get everything (frames per second, failures, the cluster's state, ...).
"""

from __future__ import annotations

from typing import Any

__all__ = ["V1_DATA_KEYS", "V1_STAT_KEYS", "for_version"]

V1_DATA_KEYS = frozenset({
    "cal", "Error", "syncplot", "mergeinfo", "directory", "attachments", "threads",
    "dircontent", "history", "fileslist", "stat", "filename", "IntegralParameters", "graphs",
})
V1_STAT_KEYS = ("images processed", "queue length", "time", "start time", "mergecount")


def for_version(reply: dict[str, Any], version: int) -> dict[str, Any]:
    """``reply`` as a client of protocol ``version`` may receive it."""
    if version != 1 or not isinstance(reply.get("data"), dict):
        return reply
    data = {k: v for k, v in reply["data"].items() if k in V1_DATA_KEYS}
    if isinstance(data.get("stat"), dict):
        data["stat"] = {k: v for k, v in data["stat"].items() if k in V1_STAT_KEYS}
    return {"result": reply["result"], "data": data}
