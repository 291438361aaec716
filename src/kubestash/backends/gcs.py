""":class:`ObjectBackend` for Google Cloud Storage, on Google's own client (google-cloud-storage, JSON API).

Why not obstore here, as for the other providers: obstore reaches GCS through its XML API, which the only
GCS server that runs on this machine (gcp-storage-emulator) barely implements -- PUT answers without an
ETag, list/HEAD/DELETE answer 501 -- so an obstore GCS backend could never be tested end to end. Google's
client speaks the JSON API, which both real GCS and the emulator serve, so the code that is tested is the
code that runs. It is a blocking client (requests), so every call runs on a thread pool sized by
``maxConnections``; that pool, not the event loop, bounds concurrent requests.

Credentials: ``GOOGLE_SERVICE_ACCOUNT_JSON_KEY`` (a service-account key), otherwise application-default
credentials (workload identity, metadata server); a key that cannot be parsed, a token exchange that is
refused (``invalid_grant``: revoked or wrong key) and missing default credentials all read
``InvalidCredentials``. ``STORAGE_EMULATOR_HOST``, the variable Google's SDKs honour, redirects requests to
an emulator; without a key they then go unauthenticated.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests
from google.api_core import exceptions as api_errors
from google.api_core.retry import Retry, if_transient_error
from google.auth import exceptions as auth_errors
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import storage
from google.oauth2 import service_account

from kubestash.backends.base import BackendError, ErrorReason, ObjectInfo
from kubestash.backends.keys import KeySpace

T = TypeVar("T")

DEFAULT_CONNECTIONS = 8
RETRY_MAX_SLEEP = 4.0
"""Longest pause between two attempts of a retried request (Google's default grows to 60 s): a closed backend's
retrying thread is at most this long from noticing."""
SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
_BATCH = 100  # the most operations one GCS batch request may carry
_MAX_MESSAGE = 400


def build_credentials(key_json: str | None, *, emulator: bool) -> Credentials | None:
    """Credentials for a client; None means application-default ones (resolved by the client)."""
    if key_json is None:
        return AnonymousCredentials() if emulator else None  # type: ignore[no-untyped-call]
    try:
        info = json.loads(key_json)
        if not isinstance(info, dict):
            raise ValueError("it is not a JSON object")
        creds = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)  # type: ignore[no-untyped-call]
    except (ValueError, KeyError) as e:
        raise BackendError(
            "InvalidCredentials",
            f"GOOGLE_SERVICE_ACCOUNT_JSON_KEY is not a service-account key: {_first_line(str(e)) or type(e).__name__}",
        ) from None
    return creds  # type: ignore[no-any-return]


class GcsBackend:
    """An :class:`~kubestash.backends.base.ObjectBackend` over one GCS bucket and a key prefix."""

    def __init__(
        self,
        bucket: str,
        *,
        credentials: Credentials | None,
        project: str | None = None,
        endpoint: str | None = None,
        description: str,
        prefix: str = "",
        secrets: Iterable[str] = (),
        max_connections: int | None = None,
        retry_timeout: float | None = 60.0,
    ) -> None:
        self._bucket_name = bucket
        self._keys = KeySpace(description, prefix, secrets)
        workers = max_connections if max_connections and max_connections > 0 else DEFAULT_CONNECTIONS
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gcs")
        self._open = threading.Event()
        self._open.set()
        self._retry: Retry | None = None
        if retry_timeout:
            is_open = self._open.is_set
            self._retry = Retry(
                predicate=lambda exc: is_open() and if_transient_error(exc),
                maximum=RETRY_MAX_SLEEP,
                timeout=retry_timeout,
            )
        self._make_client = functools.partial(_client, credentials, project, endpoint, workers)
        self._client_instance: storage.Client | None = None

    @property
    def description(self) -> str:
        return self._keys.description

    # ------------------------------------------------------------ operations

    async def put(self, path: str, data: bytes) -> None:
        key = self._keys.key(path)
        await self._call(
            "put",
            path,
            lambda: (
                self._bucket()
                .blob(key)
                .upload_from_string(data, content_type="application/octet-stream", retry=self._retry)
            ),
            missing_means_bucket=True,
        )

    async def get(self, path: str) -> bytes:
        key = self._keys.key(path)
        return await self._call("get", path, lambda: bytes(self._blob(key).download_as_bytes(retry=self._retry)))

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        key = self._keys.key(path)
        end = offset + length - 1  # inclusive, as HTTP ranges
        return await self._call(
            "get", path, lambda: bytes(self._blob(key).download_as_bytes(start=offset, end=end, retry=self._retry))
        )

    async def exists(self, path: str) -> bool:
        key = self._keys.key(path)
        return await self._call("head", path, lambda: bool(self._blob(key).exists(retry=self._retry)))

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        full = self._keys.join(prefix)
        pages = await self._call(
            "list",
            prefix,
            lambda: iter(
                self._client()
                .list_blobs(self._bucket_name, prefix=f"{full}/" if full else None, page_size=1000, retry=self._retry)
                .pages
            ),
            missing_means_bucket=True,
        )
        while True:
            page = await self._call("list", prefix, lambda: _next_page(pages), missing_means_bucket=True)
            if page is None:
                return
            for blob in page:
                yield ObjectInfo(path=self._keys.relative(blob.name), size=int(blob.size or 0))

    async def delete(self, path: str) -> None:
        key = self._keys.key(path)
        try:
            await self._call("delete", path, lambda: self._blob(key).delete(retry=self._retry))
        except BackendError as e:
            if e.reason != "NotFound":
                raise

    async def delete_prefix(self, prefix: str) -> int:
        keys = [self._keys.join(info.path) async for info in self.list(prefix)]
        batches = [keys[i : i + _BATCH] for i in range(0, len(keys), _BATCH)]
        await asyncio.gather(*(self._call("delete", prefix, functools.partial(self._delete_batch, b)) for b in batches))
        return len(keys)

    async def check(self) -> None:
        probe = f".kubestash-probe-{uuid.uuid4().hex}"
        await self.put(probe, b"kubestash write probe\n")
        await self.delete(probe)

    def close(self) -> None:
        """Queued calls are dropped; one that is running stops retrying at its next failure (the pool's threads
        cannot be interrupted, and Google's client would otherwise retry a dead endpoint for a minute after
        the caller gave up, e.g. past the operator's time limit)."""
        self._open.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ helpers

    def _client(self) -> storage.Client:
        # Built lazily on a pool thread: application-default credentials may probe the metadata server.
        if self._client_instance is None:
            self._client_instance = self._make_client()
        return self._client_instance

    def _bucket(self) -> storage.Bucket:
        return self._client().bucket(self._bucket_name)

    def _blob(self, key: str) -> storage.Blob:
        return self._bucket().blob(key)

    def _delete_batch(self, keys: builtins.list[str]) -> None:
        client = self._client()
        bucket = client.bucket(self._bucket_name)
        # A key deleted meanwhile answers 404 inside the batch; that is the outcome we wanted.
        with client.batch(raise_exception=False):
            for key in keys:
                bucket.delete_blob(key)

    async def _call(self, op: str, path: str, fn: Callable[[], T], *, missing_means_bucket: bool = False) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        except BackendError as e:
            raise self._keys.error(e.reason, op, path, e.message) from None
        except Exception as e:
            reason, detail = classify(e, missing_means_bucket=missing_means_bucket)
            raise self._keys.error(reason, op, path, detail) from None


def _client(credentials: Credentials | None, project: str | None, endpoint: str | None, pool: int) -> storage.Client:
    options = {"api_endpoint": endpoint} if endpoint else None
    try:
        client = storage.Client(project=project or "<none>", credentials=credentials, client_options=options)
    except auth_errors.DefaultCredentialsError as e:
        raise BackendError("InvalidCredentials", f"no Google credentials: {_first_line(str(e))}") from None
    # google-cloud-storage 3.x fetches each bucket's metadata once more, in a thread of its own retrying for two
    # minutes, only to label tracing spans: one more GET per bucket, and a thread that outlives the backend when
    # the endpoint is gone. Without this cache it does neither.
    client._bucket_metadata_cache = None
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
    client._http.mount("https://", adapter)
    client._http.mount("http://", adapter)
    return client


def _next_page(pages: Iterator[Any]) -> builtins.list[Any] | None:
    page = next(pages, None)
    return None if page is None else list(page)


def emulator_host() -> str | None:
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if not host:
        return None
    return host.rstrip("/") if "://" in host else f"http://{host.rstrip('/')}"


def classify(exc: BaseException, *, missing_means_bucket: bool = False) -> tuple[ErrorReason, str]:
    """The reason for an exception of Google's client and a one-line summary of it (not yet scrubbed)."""
    if isinstance(exc, api_errors.RetryError) and exc.cause is not None:
        return classify(exc.cause, missing_means_bucket=missing_means_bucket)
    detail = _summary(exc)
    if isinstance(exc, auth_errors.RefreshError | auth_errors.DefaultCredentialsError | api_errors.Unauthorized):
        return "InvalidCredentials", detail
    if isinstance(exc, api_errors.NotFound):
        if missing_means_bucket or "bucket does not exist" in detail.lower():
            return "BucketNotFound", detail
        return "NotFound", detail
    if isinstance(exc, api_errors.Forbidden):
        return "PermissionDenied", detail
    if isinstance(exc, requests.ConnectionError | requests.Timeout | auth_errors.TransportError):
        return "Unreachable", detail
    return "Unknown", f"{type(exc).__name__}: {detail}"


def _summary(exc: BaseException) -> str:
    if isinstance(exc, api_errors.GoogleAPICallError):
        status = f"HTTP {exc.code}" if exc.code else type(exc).__name__
        text = f"{status}: {exc.message}" if exc.message else status
    elif isinstance(exc, auth_errors.RefreshError) and exc.args:
        text = " ".join(str(a) for a in exc.args[:1])
    else:
        text = str(exc)
    line = _first_line(text)
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


def _first_line(text: str) -> str:
    return " ".join(text.split("\n", 1)[0].split())
