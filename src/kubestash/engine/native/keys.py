"""Key management, as ``restic key list|add|remove|passwd`` (restic 0.14).

A repository's master key is stored once per password, each copy in a ``keys/<id>`` file encrypted with a key
derived from that password; adding a password adds such a file, removing one deletes it. The key file that
opened the repository is "current" and cannot be removed (that would risk locking the user out mid-command);
``passwd`` is add-then-remove-current, so a crash in between leaves both passwords working, never neither.
Key files are plain JSON (only ``data`` is encrypted), so listing needs no password beyond opening.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from kubestash.engine.native.files import storage_id
from kubestash.engine.native.init import DEFAULT_KDF, KdfParams, key_file
from kubestash.engine.native.repository import NativeRepository, RepositoryError
from kubestash.engine.native.store import path_of, writable
from kubestash.engine.native.tree import GoTime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyFileInfo:
    """A key file's public metadata; ``current`` marks the one that opened the repository."""

    id: str
    current: bool
    username: str
    hostname: str
    created: datetime | None


def _created(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        stamp = GoTime.from_json(text)
    except ValueError:
        return None
    return datetime.fromtimestamp(stamp.unix_ns / 1e9, timezone(timedelta(seconds=stamp.offset)))


async def list_keys(repo: NativeRepository) -> list[KeyFileInfo]:
    """Every readable key file, in id order; unreadable ones are skipped with a warning, as restic does."""
    found = []
    for name in await repo.store.list("keys"):
        try:
            doc = json.loads(await repo.store.get(path_of("keys", name)))
            if not isinstance(doc, dict):
                raise ValueError("a key file is a JSON object")
        except ValueError as e:
            log.warning("cannot read key %s: %s", name[:8], e)
            continue
        found.append(
            KeyFileInfo(
                id=name,
                current=name == repo.key_id,
                username=str(doc.get("username") or ""),
                hostname=str(doc.get("hostname") or ""),
                created=_created(doc.get("created")),
            )
        )
    return found


async def add_key(
    repo: NativeRepository, new_password: str, *, user: str = "", host: str = "", kdf: KdfParams = DEFAULT_KDF
) -> str:
    """Add a key file opening the repository with ``new_password``; returns its id. An empty ``user``/``host``
    records this process's (restic's ``--user``/``--host`` defaults)."""
    raw = key_file(repo.key, new_password, kdf, username=user or None, hostname=host or None)
    key_id = storage_id(raw)
    await writable(repo.store).put(path_of("keys", key_id), raw)
    return key_id


async def _resolve(repo: NativeRepository, key_id: str) -> str:
    """The full key id a unique prefix names (restic's ``restic.Find`` messages)."""
    names = await repo.store.list("keys")
    matches = [n for n in names if n.startswith(key_id)] if key_id else []
    if not matches:
        raise RepositoryError(f"no matching ID found for prefix {key_id!r}")
    if len(matches) > 1:
        raise RepositoryError(f"multiple IDs with prefix {key_id!r} found")
    return matches[0]


async def remove_key(repo: NativeRepository, key_id: str) -> None:
    """Delete the key file ``key_id`` (full id or unique prefix); never the one this repository was opened with."""
    if not repo.key_id:
        raise RepositoryError("the key in use is unknown (open the repository with a password to manage keys)")
    name = await _resolve(repo, key_id)
    if name == repo.key_id:
        raise RepositoryError("refusing to remove key currently used to access repository")
    await writable(repo.store).delete(path_of("keys", name))


async def change_password(repo: NativeRepository, new_password: str, *, kdf: KdfParams = DEFAULT_KDF) -> str:
    """``restic key passwd``: add a key for ``new_password``, then remove the current one; returns the new id.

    ``repo`` stays usable: its :attr:`~NativeRepository.key_id` becomes the new key's.
    """
    if not repo.key_id:
        raise RepositoryError("the key in use is unknown (open the repository with a password to manage keys)")
    new_id = await add_key(repo, new_password, kdf=kdf)
    old_id, repo.key_id = repo.key_id, new_id
    await writable(repo.store).delete(path_of("keys", old_id))
    return new_id
