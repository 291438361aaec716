"""Where a restic repository's files live, as the native engine needs to read them.

The engine only ever lists a kind of file (``keys``, ``index``, ``data``...), reads a whole small file, or
reads a byte range of a pack; keeping that to three async calls lets the same repository code run on a local
directory and on every :class:`~kubestash.backends.base.ObjectBackend` (S3, GCS, Azure) without knowing which.
Writing (backup, init) adds ``put``, ``delete`` and ``exists``; a local ``put`` is atomic (temporary file in
the same directory, then ``rename``) so a crash never leaves a truncated pack or index under its final name.
Paths are restic's layout relative to the repository root: ``config``, ``keys/<id>``, ``index/<id>``,
``snapshots/<id>``, ``locks/<id>`` and ``data/<first 2 hex digits>/<id>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol, cast

from kubestash.backends.base import ObjectBackend

Kind = Literal["config", "keys", "data", "index", "snapshots", "locks"]
KINDS: tuple[Kind, ...] = ("config", "keys", "data", "index", "snapshots", "locks")
Names = list[str]


class StoreError(Exception):
    """A repository file could not be read (missing, or the storage failed)."""


class Store(Protocol):
    @property
    def description(self) -> str:
        """Where the repository is, for messages."""
        ...

    async def list(self, kind: Kind) -> Names:
        """The names (ids) of the files of ``kind``; for ``config``, ``["config"]`` if it exists."""
        ...

    async def get(self, path: str) -> bytes: ...

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; fewer only if the file is shorter."""
        ...


class WritableStore(Store, Protocol):
    """A store the engine can also write to (init, backup)."""

    async def put(self, path: str, data: bytes) -> None:
        """Create or replace ``path``; readers never see a partial file under that name."""
        ...

    async def delete(self, path: str) -> None:
        """Remove ``path``; a missing file is not an error."""
        ...

    async def exists(self, path: str) -> bool: ...


def writable(store: Store) -> WritableStore:
    """``store`` as a :class:`WritableStore`, or :class:`StoreError` if it is read-only."""
    if not all(callable(getattr(store, name, None)) for name in ("put", "delete", "exists")):
        raise StoreError(f"{store.description}: this store cannot be written to")
    return cast(WritableStore, store)


_ID = re.compile(r"[0-9a-f]{64}")


def is_id(name: str) -> bool:
    """Whether ``name`` is a storage id. Anything else (a ``.tmp-`` file a killed write left behind, a stray
    file) is not part of the repository, as restic also ignores such names."""
    return _ID.fullmatch(name) is not None


def path_of(kind: Kind, name: str) -> str:
    """The repository-relative path of a file of ``kind`` named ``name`` (data files are sharded)."""
    if kind == "config":
        return "config"
    if kind == "data":
        return f"data/{name[:2]}/{name}"
    return f"{kind}/{name}"


class LocalStore:
    """A repository in a local directory; blocking file I/O runs in worker threads."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def description(self) -> str:
        return str(self.root)

    async def list(self, kind: Kind) -> Names:
        return await asyncio.to_thread(self._list, kind)

    def _list(self, kind: Kind) -> Names:
        if kind == "config":
            return ["config"] if (self.root / "config").is_file() else []
        base = self.root / kind
        if not base.is_dir():
            return []
        if kind == "data":
            found = (f.name for shard in base.iterdir() if shard.is_dir() for f in shard.iterdir() if f.is_file())
        else:
            found = (f.name for f in base.iterdir() if f.is_file())
        return sorted(name for name in found if is_id(name))

    async def get(self, path: str) -> bytes:
        return await asyncio.to_thread(self._get, path)

    def _get(self, path: str) -> bytes:
        try:
            return (self.root / path).read_bytes()
        except OSError as e:
            raise StoreError(f"{self.root}: cannot read {path}: {e.strerror or e}") from None

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        return await asyncio.to_thread(self.read_range, path, offset, length)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """:meth:`get_range` without the event loop (a worker process reading the parent tree)."""
        try:
            fd = os.open(self.root / path, os.O_RDONLY)
        except OSError as e:
            raise StoreError(f"{self.root}: cannot read {path}: {e.strerror or e}") from None
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    async def put(self, path: str, data: bytes) -> None:
        """Write ``path`` atomically: a temporary file in the same directory, fsynced, then renamed."""
        await asyncio.to_thread(self._put, path, data)

    def _put(self, path: str, data: bytes) -> None:
        target = self.root / path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        except OSError as e:
            raise StoreError(f"{self.root}: cannot write {path}: {e.strerror or e}") from None
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o400)  # read-only, as restic's local backend leaves its files
            os.replace(tmp, target)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StoreError(f"{self.root}: cannot write {path}: {e.strerror or e}") from None

    async def delete(self, path: str) -> None:
        """Remove ``path``; a missing file is not an error."""
        await asyncio.to_thread(self._delete, path)

    def _delete(self, path: str) -> None:
        try:
            (self.root / path).unlink(missing_ok=True)
        except OSError as e:
            raise StoreError(f"{self.root}: cannot delete {path}: {e.strerror or e}") from None

    async def exists(self, path: str) -> bool:
        return await asyncio.to_thread((self.root / path).is_file)


class BackendStore:
    """A repository under ``prefix`` of an object backend.

    :meth:`get_range` is one ranged request (a blob, a tree, a pack's header), not a whole pack.
    """

    def __init__(self, backend: ObjectBackend, prefix: str = "") -> None:
        self.backend = backend
        self.prefix = prefix.strip("/")

    @property
    def description(self) -> str:
        return f"{self.backend.description.rstrip('/')}/{self.prefix}" if self.prefix else self.backend.description

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    async def list(self, kind: Kind) -> Names:
        if kind == "config":
            return ["config"] if await self.backend.exists(self._key("config")) else []
        names = [info.path.rsplit("/", 1)[-1] async for info in self.backend.list(self._key(kind) + "/")]
        return sorted(name for name in names if is_id(name))

    async def get(self, path: str) -> bytes:
        return await self.backend.get(self._key(path))

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        return await self.backend.get_range(self._key(path), offset, length)

    async def put(self, path: str, data: bytes) -> None:
        """Object stores replace an object atomically on upload; a failed upload leaves no object."""
        await self.backend.put(self._key(path), data)

    async def delete(self, path: str) -> None:
        await self.backend.delete(self._key(path))

    async def exists(self, path: str) -> bool:
        return await self.backend.exists(self._key(path))


REMOTE_UNSUPPORTED = ("b2:", "sftp:", "rest:", "swift:", "rclone:")
AZURE_ENDPOINT = "AZURE_ENDPOINT"
"""Not restic's: a full Azure blob endpoint (``http://127.0.0.1:10000/devstoreaccount1`` for azurite)."""


def parse_s3_url(url: str) -> tuple[str, str, str]:
    """(endpoint URL, bucket, prefix) from restic's ``s3:[http(s)://]host[:port]/bucket[/prefix]``."""
    rest = url.removeprefix("s3:")
    scheme = "https"
    for candidate in ("http://", "https://"):
        if rest.startswith(candidate):
            scheme, rest = candidate[:-3], rest[len(candidate) :]
            break
    else:
        rest = rest.removeprefix("//")
    parts = [p for p in rest.split("/") if p]
    if len(parts) < 2:
        raise ValueError("an s3 repository is s3:http(s)://host[:port]/bucket[/prefix]")
    return f"{scheme}://{parts[0]}", parts[1], "/".join(parts[2:])


def parse_bucket_url(url: str, scheme: str) -> tuple[str, str]:
    """(bucket or container, prefix) from restic's ``gs:bucket:/prefix`` and ``azure:container:/prefix``."""
    bucket, sep, prefix = url.removeprefix(scheme).partition(":")
    if not bucket or not sep:
        raise ValueError(f"a {scheme[:-1]} repository is {scheme}<bucket>:/<prefix>")
    return bucket, prefix.strip("/")


def store_from_url(url: str, env: Mapping[str, str]) -> Store:
    """The store restic's ``-r URL`` names, with restic's environment variables for credentials: a local
    path; ``s3:`` (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``); ``gs:``
    (``GOOGLE_APPLICATION_CREDENTIALS``, a key file; ``GOOGLE_PROJECT_ID``; ``STORAGE_EMULATOR_HOST``);
    ``azure:`` (``AZURE_ACCOUNT_NAME``, ``AZURE_ACCOUNT_KEY``, and :data:`AZURE_ENDPOINT`)."""
    if not url.startswith(("s3:", "gs:", "azure:")):
        scheme = next((s for s in REMOTE_UNSUPPORTED if url.startswith(s)), None)
        if scheme is not None:
            raise ValueError(f"{scheme[:-1]} repositories are not supported by the native engine; use --engine restic")
        return LocalStore(Path(url.removeprefix("local:")))
    # Imported here: the models and the cloud clients are only needed for remote repositories.
    from kubestash.api.storage import Backend
    from kubestash.backends import factory

    secret: dict[str, bytes] = {}
    endpoint: str | None = None
    if url.startswith("s3:"):
        s3_endpoint, bucket, prefix = parse_s3_url(url)
        keys = (factory.AWS_ACCESS_KEY_ID, factory.AWS_SECRET_ACCESS_KEY)
        secret = {k: env[k].encode() for k in keys if env.get(k)}
        region = env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")
        spec = {"provider": "s3", "s3": {"endpoint": s3_endpoint, "bucket": bucket, "region": region}}
    elif url.startswith("gs:"):
        bucket, prefix = parse_bucket_url(url, "gs:")
        credentials = env.get("GOOGLE_APPLICATION_CREDENTIALS")
        if credentials:
            try:
                secret[factory.GOOGLE_SERVICE_ACCOUNT_JSON_KEY] = Path(credentials).read_bytes()
            except OSError as e:
                raise ValueError(f"cannot read GOOGLE_APPLICATION_CREDENTIALS {credentials}: {e.strerror}") from None
        if env.get(factory.GOOGLE_PROJECT_ID):
            secret[factory.GOOGLE_PROJECT_ID] = env[factory.GOOGLE_PROJECT_ID].encode()
        spec = {"provider": "gcs", "gcs": {"bucket": bucket}}
    else:
        bucket, prefix = parse_bucket_url(url, "azure:")
        account = env.get("AZURE_ACCOUNT_NAME")
        if not account:
            raise ValueError("an azure repository needs AZURE_ACCOUNT_NAME")
        if env.get(factory.AZURE_ACCOUNT_KEY):
            secret[factory.AZURE_ACCOUNT_KEY] = env[factory.AZURE_ACCOUNT_KEY].encode()
        spec = {"provider": "azure", "azure": {"storageAccount": account, "container": bucket}}
        endpoint = env.get(AZURE_ENDPOINT)
    storage = Backend.model_validate(spec)
    return BackendStore(factory.open_backend(storage, secret or None, endpoint=endpoint), prefix)


async def list_sizes(store: Store, kind: Kind) -> dict[str, int | None]:
    """The files of ``kind`` with their sizes where listing gives them cheaply (object stores list sizes, a
    local directory has them in its entries); None where unknown."""
    if isinstance(store, BackendStore):
        prefix = store._key(kind) + "/"
        return {
            name: info.size async for info in store.backend.list(prefix) if is_id(name := info.path.rsplit("/", 1)[-1])
        }
    if isinstance(store, LocalStore):
        base = store.root / kind

        def sizes() -> dict[str, int | None]:
            found: dict[str, int | None] = {}
            if not base.is_dir():
                return found
            shards = [e.path for e in os.scandir(base) if e.is_dir()] if kind == "data" else [str(base)]
            for shard in shards:
                for entry in os.scandir(shard):
                    if entry.is_file() and is_id(entry.name):
                        found[entry.name] = entry.stat().st_size
            return found

        return await asyncio.to_thread(sizes)
    return dict.fromkeys(await store.list(kind))
