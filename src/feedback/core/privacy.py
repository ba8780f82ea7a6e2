"""Keyed user ids for the gold sketches, and the minimum crowd a published gold row needs.

Why keyed: a HyperLogLog sketch of raw ``user_id`` values (public hash seed) answers membership
questions. Whoever holds a user id can sketch that one id, union it into a row's
``users_sketch`` and see whether the estimate moves: it does not when the user is already in the
row. Gold therefore sketches ``HMAC-SHA256(key, user_id)`` instead; without the key nobody can
compute the value a user contributes, so the test says nothing. The key must stay the same for a
lake: sketches built under two keys count each user twice when unioned (after a key change, run
``feedback backfill`` on any day: it rebuilds gold from silver under the current key).

Where the key comes from (``user_key``), first match wins:

1. ``FEEDBACK_USER_KEY``: the key as hex, at least 16 bytes (``openssl rand -hex 32``);
2. ``FEEDBACK_USER_KEY_FILE``: a secrets file holding the key the same way;
3. neither set, local lake: ``LAKE/_secrets/user_key``, created once with 32 random bytes and
   mode 0600, with a warning. This keeps tests and ``make demo`` working and sketches of one lake
   mergeable across runs; production sets one of the variables, since whoever can read the lake
   can read that file. A remote lake (``scheme://``) without either variable is an error.

The key never comes from the repository or ``conf/``.

Why suppression happens at read time (``published``): the gold tables keep every row, including
rows with fewer than ``privacy.min_users`` distinct users, because their sketches are meant to be
unioned (into a row as batches arrive, into totals over several rows), and a few small rows can
make a total that passes the threshold: dropping them from the tables would make those counts
wrong. What analysts read (``feedback.ops.notebook_queries``) passes through ``published``, which
keeps rows whose ``users`` estimate reaches ``min_users``.
``gold/defect_metrics`` has no per-user column (it counts turns per hour x domain x intent x
device type), so nothing there is filtered.

The HMAC is a native Spark expression (RFC 2104 over ``sha2``), because Spark has no ``hmac``
function: the key's inner and outer pads are binary literals of the plan, so they show in query
plans (``explain``, the Spark UI, event logs); keep those as restricted as the lake itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from feedback.config import PrivacyConfig
from feedback.core.lake import LakePaths

LOG = logging.getLogger("feedback.core.privacy")

KEY_ENV = "FEEDBACK_USER_KEY"
KEY_FILE_ENV = "FEEDBACK_USER_KEY_FILE"
LAKE_KEY_PARTS = ("_secrets", "user_key")
MIN_KEY_BYTES = 16
GENERATED_KEY_BYTES = 32
DEFAULT_MIN_USERS = PrivacyConfig.min_users
_SHA256_BLOCK = 64


def parse_key(text: str, source: str) -> bytes:
    """The key written as hex in ``text`` (surrounding whitespace ignored); ``source`` names it in errors."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    cleaned = text.strip()
    try:
        key = bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"{source}: the user key must be hex (e.g. `openssl rand -hex 32`)") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{source}: the user key must be at least {MIN_KEY_BYTES} bytes ({2 * MIN_KEY_BYTES} hex digits), got {len(key)}")
    return key


def lake_key_path(lake: LakePaths) -> Path | None:
    """``LAKE/_secrets/user_key`` for a local lake; None for a remote one (no local file to keep it in)."""
    root = lake.root
    if root.startswith("file:"):
        root = root.removeprefix("file:")
        root = "/" + root.lstrip("/") if root.startswith("//") else root
    elif "://" in root:
        return None
    return Path(root).joinpath(*LAKE_KEY_PARTS)


def _read_or_create_lake_key(path: Path) -> tuple[bytes, bool]:
    """The key of ``path`` and whether this call created it (32 random bytes, mode 0600).

    The file is written beside its final name and linked into place, so two processes that
    start at once agree on one key and no reader sees a half-written file.
    """
    created = False
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(os.urandom(GENERATED_KEY_BYTES).hex() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(draft, path)
            except FileExistsError:
                pass  # another process created it first: use theirs
            except OSError:  # a file system without hard links: create in place
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                    path.write_text(draft.read_text())
                except FileExistsError:
                    pass
            else:
                created = True
        finally:
            draft.unlink(missing_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        LOG.warning("user key file %s is readable by others (mode %o): chmod 600 it", path, mode)
    return parse_key(path.read_text(), str(path)), created


def user_key(lake: LakePaths, environ: Mapping[str, str] | None = None, quiet: bool = False) -> bytes:
    """The HMAC key of the user ids sketched in gold (see the module docstring for the sources).

    Args:
        lake: the lake (its ``_secrets/user_key`` is the local fallback).
        environ: where to look for ``FEEDBACK_USER_KEY``/``FEEDBACK_USER_KEY_FILE``; None: ``os.environ``.
        quiet: do not warn that the key comes from the lake (callers that run once per batch).

    Raises:
        ValueError: both variables are set, a key is not hex or too short, or neither variable is
            set for a remote lake.
        FileNotFoundError: ``FEEDBACK_USER_KEY_FILE`` names a file that does not exist.
    """
    env = os.environ if environ is None else environ
    inline, file_name = env.get(KEY_ENV, ""), env.get(KEY_FILE_ENV, "")
    if inline and file_name:
        raise ValueError(f"{KEY_ENV} and {KEY_FILE_ENV} are both set: set one")
    if inline:
        return parse_key(inline, KEY_ENV)
    if file_name:
        secrets = Path(file_name)
        if not secrets.is_file():
            raise FileNotFoundError(f"{KEY_FILE_ENV}: no such file {secrets}")
        return parse_key(secrets.read_text(), f"{KEY_FILE_ENV} ({secrets})")
    path = lake_key_path(lake)
    if path is None:
        raise ValueError(f"lake {lake.root} is remote: set {KEY_ENV} (hex, e.g. `openssl rand -hex 32`) or {KEY_FILE_ENV}")
    key, created = _read_or_create_lake_key(path)
    if created:
        LOG.warning("created the user key %s: production should set %s or %s", path, KEY_ENV, KEY_FILE_ENV)
    elif not quiet:
        LOG.warning("read the user key from %s: production should set %s or %s", path, KEY_ENV, KEY_FILE_ENV)
    return key


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer pads of HMAC-SHA256 for ``key`` (RFC 2104)."""
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError(f"key must be bytes, got {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    block = hashlib.sha256(key).digest() if len(key) > _SHA256_BLOCK else bytes(key)
    block = block.ljust(_SHA256_BLOCK, b"\x00")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


def keyed_user_id(user_id: Column, key: bytes) -> Column:
    """HMAC-SHA256(key, UTF-8 of ``user_id``) as 64 lowercase hex digits; null stays null.

    Equal to ``hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()``, built from
    ``sha2`` over binary: H((K ^ opad) || H((K ^ ipad) || m)).
    """
    if not isinstance(user_id, Column):
        raise TypeError(f"user_id must be a Column, got {type(user_id).__name__}")
    inner_pad, outer_pad = hmac_pads(key)
    message = user_id.cast("string").cast("binary")
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_pad), message), 256))
    return F.sha2(F.concat(F.lit(outer_pad), inner), 256)


def check_min_users(min_users: int) -> None:
    """Raise ValueError unless ``min_users`` is an integer >= 2 (1 would publish single users)."""
    if not isinstance(min_users, int) or isinstance(min_users, bool) or min_users < 2:
        raise ValueError(f"min_users must be an integer >= 2, got {min_users!r}")


def published(frame: DataFrame, min_users: int = DEFAULT_MIN_USERS, users: str = "users") -> DataFrame:
    """The rows of a gold table that may be shown: at least ``min_users`` distinct users (``users`` column).

    ``users`` is the HyperLogLog estimate; below a few hundred users it is exact in practice.
    """
    check_min_users(min_users)
    if users not in frame.columns:
        raise ValueError(f"frame has no column {users!r} (columns: {', '.join(frame.columns)})")
    return frame.filter(F.col(users) >= F.lit(min_users))
