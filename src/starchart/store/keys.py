"""API keys: made here, shown once, kept only as a hash.

A key is ``sk-star-`` plus 256 random bits. The database keeps its sha256
(a fast hash is right for a high-entropy secret: there is nothing to brute
force) and a short displayable prefix. Checking a key compares its hash with
every stored hash using ``hmac.compare_digest`` and no early exit, so the time
taken says nothing about which key, if any, nearly matched.

Once any key has been created the server requires one; revoking every key
locks the server rather than reopening it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from starchart.errors import NotFound
from starchart.store.db import Database
from starchart.store.schema import api_keys

KEY_PREFIX = "sk-star-"
KEYS_CHANNEL = "starchart_keys"  # every write to the keys is announced on it
_SHOWN_CHARS = 6  # of the secret part, in listings: enough to tell keys apart


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str | None
    prefix: str
    created_at: float
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Access:
    """What a request's credentials amount to."""

    required: bool  # the server has keys, so a valid one is needed
    key_id: str | None  # the valid, unrevoked key presented (None: none or wrong)

    @property
    def granted(self) -> bool:
        return not self.required or self.key_id is not None


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str | None = None) -> tuple[ApiKey, str]:
        """A new key: the record, and the secret (which is never stored)."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(id="key_" + secrets.token_hex(6), name=name,
                     prefix=secret[: len(KEY_PREFIX) + _SHOWN_CHARS],
                     created_at=time.time(), revoked_at=None)
        with self.db.write_announced(KEYS_CHANNEL) as conn:
            conn.execute(api_keys.insert().values(**key.as_dict(), key_hash=key_hash(secret)))
        return key, secret

    def list(self) -> list[ApiKey]:
        cols = [api_keys.c[f] for f in ("id", "name", "prefix", "created_at", "revoked_at")]
        with self.db.read() as conn:
            rows = conn.execute(sa.select(*cols).order_by(api_keys.c.created_at)).all()
        return [ApiKey(*row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key for good; revoking a revoked key again is not an error."""
        with self.db.write_announced(KEYS_CHANNEL) as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        found = next((k for k in self.list() if k.id == key_id), None)
        if found is None:
            raise NotFound(f"no API key with id {key_id!r} (see `starchart keys list`)",
                           param="id")
        return found

    def any_exist(self) -> bool:
        with self.db.read() as conn:
            return (conn.scalar(sa.select(sa.func.count()).select_from(api_keys)) or 0) > 0

    def hashes(self) -> tuple[KeyHash, ...]:
        """Every key's id, hash and revocation: what a key check needs."""
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(api_keys.c.id, api_keys.c.key_hash, api_keys.c.revoked_at)
            ).all()
        return tuple(KeyHash(*row) for row in rows)


@dataclass(frozen=True)
class KeyHash:
    id: str
    key_hash: str
    revoked_at: float | None


def check_key(keys: tuple[KeyHash, ...], presented: str | None) -> Access:
    if not keys:
        return Access(required=False, key_id=None)
    digest = key_hash(presented or "").encode()
    match = None
    for key in keys:
        if hmac.compare_digest(digest, key.key_hash.encode()) and key.revoked_at is None:
            match = key.id
    return Access(required=True, key_id=match)


class KeyCheck:
    """The server's key check for every request, without a trip to the database
    while the keys have not changed.

    The keys are read once and kept with the version of ``Database.watch``; a
    request whose check finds the version unchanged is decided from them in the
    event loop. SQLite: the database's ``data_version``, which any commit anywhere
    changes. PostgreSQL: a listener on the keys' channel, which every key write
    notifies in its transaction; the write returns only once every listening server
    has seen it, so a key made or revoked by `starchart keys` in another process or
    through another replica counts on the next request. While the version cannot be
    told (PostgreSQL's listener not connected: starting, reconnecting) every check
    reads the keys, in a worker thread. Measured: the worker-thread hop on every
    request cost up to 20 ms of time to first token when 8 requests arrive together
    (threads queueing for the GIL behind the busy event loop)."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self.watch = keys.db.watch(KEYS_CHANNEL)
        self._version: int | None = None
        self._known: tuple[KeyHash, ...] = ()

    async def check(self, presented: str | None) -> Access:
        version = self.watch.version()
        if version is not None and version == self._version:
            return check_key(self._known, presented)
        # Read after the version: a change in between changes the version again, and
        # the next check reads once more.
        keys = await asyncio.to_thread(self.keys.hashes)
        if version is not None:
            self._version, self._known = version, keys
        return check_key(keys, presented)
