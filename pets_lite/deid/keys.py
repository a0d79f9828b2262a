"""Keyed pseudonyms, UIDs and date offsets: everything that depends on the secret key.

The same key maps the same input to the same output in every file and every run (studies stay
linkable); another key gives unlinkable outputs; only the key holder can re-link a pseudonym to a
patient, because without the key an HMAC can neither be inverted nor tested against a guess.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path


class DeidError(ValueError):
    """A file cannot be de-identified; the message names the file and what to do."""


def as_key(key: bytes | str) -> bytes:
    """The key as bytes; a clear error when it is too short to be a secret."""
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, bytes) or len(key) < 16:
        raise ValueError("the HMAC key must be bytes or str of at least 16 bytes "
                         "(e.g. secrets.token_bytes(32)); keep it secret, it re-links pseudonyms")
    return key


def new_key_file(path: str | os.PathLike) -> Path:
    """Create ``path`` holding a fresh 256-bit key (64 hex digits), readable by its owner only
    (mode 0600, set when the file is created, so no other user can ever read it); refuses an
    existing file. The key is never returned or printed: read it with :func:`read_key_file`."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise DeidError(f"{path}: already exists; refusing to overwrite a key (the pseudonyms "
                        "made with it could no longer be re-linked)") from exc
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


def read_key_file(path: str | os.PathLike) -> bytes:
    """The key in ``path`` (surrounding whitespace stripped); refuses a missing key, a key
    readable or writable by anyone but its owner, and one shorter than 16 bytes."""
    path = Path(path)
    if not path.is_file():
        raise DeidError(f"{path}: no such key file; create one with --new-key")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise DeidError(f"{path}: the key file is open to other users (mode {mode:04o}); whoever "
                        f"reads it can re-link every pseudonym. Run: chmod 600 {path}")
    key = path.read_bytes().strip()
    try:
        return as_key(key)
    except ValueError as exc:
        raise DeidError(f"{path}: {exc}") from None


def mac(key: bytes, purpose: str, value: str) -> bytes:
    """HMAC-SHA256 of ``purpose|value``: one key, independent outputs per purpose."""
    return hmac.new(key, f"{purpose}|{value}".encode(), hashlib.sha256).digest()


def keyed_uid(uid: str, key: bytes | str) -> str:
    """A valid UID under the 2.25 root: the first 128 bits of HMAC-SHA256(key, uid) as an integer.

    >>> u = keyed_uid("1.2.3", b"k" * 16); u.startswith("2.25.") and len(u) <= 64
    True
    >>> u == keyed_uid("1.2.3", b"k" * 16) != keyed_uid("1.2.3", b"j" * 16)
    True
    """
    return "2.25." + str(int.from_bytes(mac(as_key(key), "uid", str(uid).strip())[:16], "big"))


def pseudonym(patient: str, key: bytes | str) -> str:
    """The keyed pseudonym of a patient identifier: ``PSN`` + 16 hex digits of HMAC-SHA256.

    >>> pseudonym("12345", b"k" * 16) == pseudonym("12345", b"k" * 16)
    True
    """
    return "PSN" + mac(as_key(key), "patient", str(patient).strip()).hex()[:16].upper()


def date_offset(patient: str, key: bytes | str, min_days: int = 365, max_days: int = 3650) -> int:
    """The keyed per-patient date shift in days, always negative: in [-max_days, -min_days]."""
    h = int.from_bytes(mac(as_key(key), "date", str(patient).strip())[:8], "big")
    return -(min_days + h % (max_days - min_days + 1))


def shift_date(value: str, days: int) -> str | None:
    """Shift a DA (YYYYMMDD) or the date part of a DT value by ``days``; None if unparseable.

    >>> shift_date("20040229", 1), shift_date("20040101120000.5", -1), shift_date("2004", 1)
    ('20040301', '20031231120000.5', None)
    """
    value = str(value).strip()
    if len(value) < 8 or not value[:8].isdigit():
        return None
    try:
        day = _dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return None
    return (day + _dt.timedelta(days=days)).strftime("%Y%m%d") + value[8:]
