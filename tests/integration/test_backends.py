"""The object backends against real servers: a local directory, moto (S3), azurite (Azure) and
gcp-storage-emulator (GCS), all reached through :func:`kubestash.backends.factory.open_backend`.

Every provider runs the whole contract. GCS credentials are exchanged for tokens at a stand-in for Google's
OAuth endpoint (:mod:`google_token_server`; the emulator itself checks none), so a wrong key is refused the
way Google refuses it.

Every error test also asserts that no secret value leaks into the BackendError message.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from google_token_server import TokenServer, google_token_server
from kubestash.api.storage import Backend
from kubestash.backends.base import BackendError, ObjectBackend, ObjectInfo
from kubestash.backends.deadline import TimeLimited
from kubestash.backends.factory import open_backend
from storage_servers import Azurite, GcsEmulator, MotoServer, azurite, closed_port, gcs_emulator, moto_server

T = TypeVar("T")

if TYPE_CHECKING:
    from obstore.store import RetryConfig

S3_KEY_ID = "AKIAKUBESTASHTESTKEY"
S3_SECRET = "s3-secret-value-never-shown-0123456789"
AZURE_WRONG_KEY = "d3Jvbmcta2V5LXRoYXQtaXMtdmFsaWQtYmFzZTY0LWJ1dC1ub3QtdGhlLWFjY291bnQta2V5"
NO_RETRY: RetryConfig = {"max_retries": 0}

FULL = ["local", "s3", "azure", "gcs"]
REMOTE = ["s3", "azure", "gcs"]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# ---------------------------------------------------------------- servers (one of each per module)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture(scope="module")
def moto_auth() -> Iterator[MotoServer]:
    with moto_server(enforce_auth=True) as server:
        yield server


@pytest.fixture(scope="module")
def azure_server() -> Iterator[Azurite]:
    with azurite() as server:
        yield server


@pytest.fixture(scope="module")
def gcs() -> Iterator[GcsEmulator]:
    with gcs_emulator() as server:
        yield server


@pytest.fixture(scope="module")
def google_oauth() -> Iterator[TokenServer]:
    with google_token_server() as server:
        yield server


# ---------------------------------------------------------------- building backends


class Env:
    """Opens backends of one provider against its server; ``bucket`` is created once per provider."""

    def __init__(self, request: pytest.FixtureRequest, provider: str, tmp_path: Path, mp: pytest.MonkeyPatch) -> None:
        self.request = request
        self.provider = provider
        self.tmp_path = tmp_path
        self.mp = mp
        self.bucket = f"bucket-{uuid.uuid4().hex[:12]}"
        self.secrets: list[str] = []
        if provider == "s3":
            self.moto: MotoServer = request.getfixturevalue("moto")
            self.moto.create_bucket(self.bucket)
        elif provider == "azure":
            self.azurite: Azurite = request.getfixturevalue("azure_server")
            self.azurite.create_container(self.bucket)
        elif provider == "gcs":
            self.gcs: GcsEmulator = request.getfixturevalue("gcs")
            self.gcs.create_bucket(self.bucket)
            self.oauth: TokenServer = request.getfixturevalue("google_oauth")
            self.gcs_key = self.oauth.service_account_key(f"backup-{self.bucket}@test.iam")
            mp.setenv("STORAGE_EMULATOR_HOST", self.gcs.endpoint)

    def open(
        self,
        prefix: str = "",
        *,
        bucket: str | None = None,
        endpoint: str | None = None,
        secret: dict[str, bytes] | None = None,
    ) -> ObjectBackend:
        bucket = bucket or self.bucket
        if self.provider == "local":
            storage = Backend.model_validate(
                {
                    "provider": "local",
                    "local": {"mountPath": "/repo", "subPath": prefix, "hostPath": {"path": str(self.tmp_path)}},
                }
            )
            return open_backend(storage, None)
        if self.provider == "s3":
            storage = Backend.model_validate(
                {
                    "provider": "s3",
                    "s3": {"endpoint": endpoint or self.moto.endpoint, "bucket": bucket, "prefix": prefix},
                }
            )
            if secret is None:
                secret = {"AWS_ACCESS_KEY_ID": S3_KEY_ID.encode(), "AWS_SECRET_ACCESS_KEY": S3_SECRET.encode()}
            self.secrets = [v.decode() for v in secret.values()]
            return open_backend(storage, secret, retry_config=NO_RETRY)
        if self.provider == "azure":
            storage = Backend.model_validate(
                {
                    "provider": "azure",
                    "azure": {"storageAccount": self.azurite.account, "container": bucket, "prefix": prefix},
                }
            )
            if secret is None:
                secret = {"AZURE_ACCOUNT_KEY": self.azurite.key.encode()}
            self.secrets = [v.decode() for v in secret.values()]
            return open_backend(
                storage,
                secret,
                endpoint=endpoint or self.azurite.endpoint,
                retry_config=NO_RETRY,
            )
        assert self.provider == "gcs"
        if endpoint is not None:
            self.mp.setenv("STORAGE_EMULATOR_HOST", endpoint)
        storage = Backend.model_validate({"provider": "gcs", "gcs": {"bucket": bucket, "prefix": prefix}})
        if secret is None:
            secret = {"GOOGLE_SERVICE_ACCOUNT_JSON_KEY": self.gcs_key.encode()}
        self.secrets = [json.loads(secret["GOOGLE_SERVICE_ACCOUNT_JSON_KEY"])["private_key"]]
        return open_backend(storage, secret, retry_config=NO_RETRY)

    def assert_clean(self, err: BackendError) -> None:
        for value in self.secrets:
            assert value not in err.message
            assert value not in str(err)


@pytest.fixture
def env(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    return Env(request, request.param, tmp_path, monkeypatch)


def fails(coro: Coroutine[Any, Any, Any]) -> BackendError:
    with pytest.raises(BackendError) as info:
        run(coro)
    return info.value


async def collect(backend: ObjectBackend, prefix: str = "") -> list[ObjectInfo]:
    return sorted([info async for info in backend.list(prefix)], key=lambda i: i.path)


# ---------------------------------------------------------------- the contract


@pytest.mark.parametrize("env", FULL, indirect=True)
def test_put_get_list_delete(env: Env) -> None:
    backend = env.open(prefix="team/backups/")
    other = env.open(prefix="team/other")

    async def scenario() -> None:
        await backend.put("metadata.yaml", b"kind: BackupStorage\n")
        await backend.put("repo-a/repository.yaml", b"a" * 10)
        await backend.put("repo-a/snapshots/s1.json", b"{}")
        await backend.put("/repo-b/data/0001", b"x" * 1234)
        await other.put("outside", b"not ours")

        assert await backend.get("repo-a/repository.yaml") == b"a" * 10
        assert await backend.get("repo-b/data/0001") == b"x" * 1234
        await backend.put("repo-b/data/0002", bytes(range(256)) * 4)
        assert await backend.get_range("repo-b/data/0002", 250, 10) == bytes(range(250, 256)) + bytes(range(4))
        assert await backend.get_range("repo-b/data/0002", 1020, 100) == bytes(range(252, 256)), "short at the end"
        assert await backend.get_range("repo-b/data/0002", 0, 0) == b""
        await backend.delete("repo-b/data/0002")
        assert await backend.exists("metadata.yaml")
        assert not await backend.exists("metadata.yml")

        assert await collect(backend) == [
            ObjectInfo("metadata.yaml", 20),
            ObjectInfo("repo-a/repository.yaml", 10),
            ObjectInfo("repo-a/snapshots/s1.json", 2),
            ObjectInfo("repo-b/data/0001", 1234),
        ]
        assert await collect(backend, "repo-a") == [
            ObjectInfo("repo-a/repository.yaml", 10),
            ObjectInfo("repo-a/snapshots/s1.json", 2),
        ]
        assert await collect(backend, "repo-a/") == await collect(backend, "repo-a")
        assert await collect(backend, "missing-dir") == []

        await backend.put("metadata.yaml", b"v2")  # overwrite
        assert await backend.get("metadata.yaml") == b"v2"

        await backend.delete("metadata.yaml")
        assert not await backend.exists("metadata.yaml")
        await backend.delete("metadata.yaml")  # deleting a missing object is fine

        assert await backend.delete_prefix("repo-a") == 2
        assert await collect(backend, "repo-a") == []
        assert [i.path for i in await collect(backend, "repo-b")] == ["repo-b/data/0001"]
        assert await backend.delete_prefix("nothing-here") == 0
        assert await other.get("outside") == b"not ours"

        await backend.check()
        assert [i.path for i in await collect(backend) if ".kubestash-probe" in i.path] == []

    run(scenario())


@pytest.mark.parametrize("env", FULL, indirect=True)
def test_listed_paths_are_relative_to_prefix(env: Env) -> None:
    """Paths listed under a prefix come back relative to the storage prefix, never with it."""
    backend = env.open(prefix="p")
    run(backend.put("a/b", b"1"))
    assert [i.path for i in run(collect(backend, "a"))] == ["a/b"]


@pytest.mark.parametrize("env", FULL, indirect=True)
def test_description_has_no_secret(env: Env) -> None:
    backend = env.open(prefix="desc")
    for value in env.secrets:
        assert value not in backend.description
    expected = {"local": "local://", "s3": "s3://", "azure": "azure://", "gcs": "gs://"}[env.provider]
    assert backend.description.startswith(expected)


# ---------------------------------------------------------------- classified errors


@pytest.mark.parametrize("env", FULL, indirect=True)
def test_missing_object_is_not_found(env: Env) -> None:
    backend = env.open(prefix="nf")
    err = fails(backend.get("no/such/object"))
    assert err.reason == "NotFound", err.message
    assert "no/such/object" in err.message
    env.assert_clean(err)


@pytest.mark.parametrize("env", REMOTE, indirect=True)
def test_missing_bucket(env: Env) -> None:
    backend = env.open(prefix="x", bucket="nosuchbucketkubestash")
    # The path carries a secret value, so the scrubbing is exercised, not just assumed.
    leaky = f"dir/{env.secrets[0]}" if env.secrets else "dir/file"
    err = fails(backend.put(leaky, b"data"))
    assert err.reason == "BucketNotFound", err.message
    env.assert_clean(err)
    if env.secrets:
        assert "***" in err.message
    err = fails(backend.check())
    assert err.reason == "BucketNotFound", err.message
    err = fails(collect(backend))
    assert err.reason == "BucketNotFound", err.message
    env.assert_clean(err)


@pytest.mark.parametrize("env", REMOTE, indirect=True)
def test_wrong_credentials(env: Env) -> None:
    if env.provider == "gcs":
        endpoint = None  # a key whose JWTs the token endpoint cannot verify: a revoked or foreign key
        key = env.oauth.service_account_key(f"backup-{env.bucket}@test.iam", registered=False)
        secret = {"GOOGLE_SERVICE_ACCOUNT_JSON_KEY": key.encode()}
    elif env.provider == "s3":
        # moto checks credentials only with auth enforced; no IAM user exists there, so any key is unknown.
        endpoint = env.request.getfixturevalue("moto_auth").endpoint
        secret = {"AWS_ACCESS_KEY_ID": b"AKIAWRONGWRONGWRONG1", "AWS_SECRET_ACCESS_KEY": b"wrong-secret-value-xyz"}
    else:
        endpoint = None  # azurite checks shared-key signatures
        secret = {"AZURE_ACCOUNT_KEY": AZURE_WRONG_KEY.encode()}
    backend = env.open(prefix="creds", endpoint=endpoint, secret=secret)
    err = fails(backend.check())
    assert err.reason == "InvalidCredentials", err.message
    env.assert_clean(err)
    err = fails(collect(backend))
    assert err.reason == "InvalidCredentials", err.message
    env.assert_clean(err)


def test_malformed_gcs_key_is_invalid_credentials_naming_the_key() -> None:
    storage = Backend.model_validate({"provider": "gcs", "gcs": {"bucket": "b"}})
    for value in ("not json secret-ish", '{"type": "service_account", "private_key": "secret-ish"}'):
        with pytest.raises(BackendError) as info:
            open_backend(storage, {"GOOGLE_SERVICE_ACCOUNT_JSON_KEY": value.encode()})
        assert info.value.reason == "InvalidCredentials", info.value.message
        assert "GOOGLE_SERVICE_ACCOUNT_JSON_KEY" in info.value.message
        assert "secret-ish" not in info.value.message


def test_malformed_azure_key_is_invalid_credentials(tmp_path: Path) -> None:
    storage = Backend.model_validate(
        {"provider": "azure", "azure": {"storageAccount": "acct", "container": "c", "prefix": ""}}
    )
    secret_value = "not base64 !! secret-ish"
    with pytest.raises(BackendError) as info:
        open_backend(storage, {"AZURE_ACCOUNT_KEY": secret_value.encode()})
    assert info.value.reason == "InvalidCredentials", info.value.message
    assert secret_value not in info.value.message


@pytest.mark.parametrize("env", REMOTE, indirect=True)
def test_unreachable_endpoint(env: Env) -> None:
    port = closed_port()
    endpoint = {
        "s3": f"http://127.0.0.1:{port}",
        "azure": f"http://127.0.0.1:{port}/devstoreaccount1",
        "gcs": f"http://127.0.0.1:{port}",
    }[env.provider]
    backend = env.open(prefix="u", endpoint=endpoint)
    ops: list[Callable[[], Coroutine[Any, Any, Any]]] = [
        backend.check,
        lambda: backend.get("a"),
        lambda: collect(backend),
    ]
    for op in ops:
        err = fails(op())
        assert err.reason == "Unreachable", err.message
        env.assert_clean(err)
    # google-cloud-storage's own bucket-metadata fetch would go on retrying the dead endpoint for two minutes.
    assert [t.name for t in threading.enumerate() if "_fetch_background" in t.name] == []


def test_unresolvable_host_is_unreachable() -> None:
    storage = Backend.model_validate(
        {"provider": "s3", "s3": {"endpoint": "http://no-such-host.invalid:9000", "bucket": "bkt"}}
    )
    backend = open_backend(
        storage,
        {"AWS_ACCESS_KEY_ID": S3_KEY_ID.encode(), "AWS_SECRET_ACCESS_KEY": S3_SECRET.encode()},
        retry_config=NO_RETRY,
    )
    err = fails(backend.check())
    assert err.reason == "Unreachable", err.message
    assert S3_SECRET not in err.message


def test_silent_endpoint_times_out_as_unreachable() -> None:
    """A server that accepts connections and never answers: each request is cut off at the operator's limit
    instead of waiting out the client's minutes of retries."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        storage = Backend.model_validate(
            {"provider": "s3", "s3": {"endpoint": f"http://127.0.0.1:{port}", "bucket": "b"}}
        )
        backend = TimeLimited(
            open_backend(
                storage, {"AWS_ACCESS_KEY_ID": S3_KEY_ID.encode(), "AWS_SECRET_ACCESS_KEY": S3_SECRET.encode()}
            ),
            0.5,
        )
        for op in (backend.check(), backend.get("a"), collect(backend)):
            err = fails(op)
            assert err.reason == "Unreachable", err.message
            assert "no answer within 0.5s" in err.message
            assert S3_SECRET not in err.message


def test_closing_a_gcs_backend_stops_a_request_still_retrying() -> None:
    """Past the operator's time limit the caller has given up, but Google's client would go on retrying a dead
    endpoint on the backend's thread for its whole minute. Closed, the backend's thread stops at its next
    attempt (the controllers close every backend they open)."""
    from google.auth.credentials import AnonymousCredentials

    from kubestash.backends.gcs import RETRY_MAX_SLEEP, GcsBackend

    before = set(threading.enumerate())
    backend = TimeLimited(
        GcsBackend(
            "bucket",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            endpoint=f"http://127.0.0.1:{closed_port()}",
            description="gs://bucket",
            retry_timeout=60.0,
        ),
        0.5,
    )
    err = fails(backend.get("a"))
    assert err.reason == "Unreachable" and "no answer within 0.5s" in err.message, err.message
    started = [t for t in threading.enumerate() if t not in before]
    assert started, "the request is still retrying on a thread of the backend's pool"
    backend.close()
    deadline = time.monotonic() + 2 * RETRY_MAX_SLEEP + 5
    while any(t.is_alive() for t in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [t.name for t in started if t.is_alive()] == []
