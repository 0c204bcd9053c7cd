"""Opaque, prefixed, time-ordered ids (`prj_01J...`).

26 Crockford base32 characters after the prefix: 48 bits of milliseconds and 80 random bits, made
monotonic inside one process, so sorting by id is sorting by creation and keyset pages need no
second column.
"""

from __future__ import annotations

import os
import re
import threading
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BODY_PATTERN = "[0-9A-HJKMNP-TV-Z]{26}"
PREFIXES = ("usr", "prj", "thr", "msg", "run", "upl", "evt", "apr", "wfr", "eml", "led", "llm")

_lock = threading.Lock()
_last = 0


def new_id(prefix: str) -> str:
    global _last
    with _lock:
        value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
        if value <= _last:
            value = _last + 1
        _last = value
    return f"{prefix}_{_encode(value)}"


def id_pattern(prefix: str) -> str:
    """The regular expression a well-formed id of this type matches (for path and body checks)."""
    return f"^{prefix}_{BODY_PATTERN}$"


def is_id(prefix: str, value: str) -> bool:
    return re.fullmatch(id_pattern(prefix), value) is not None


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
