"""Where a restic repository lives and how to open it: a BackupStorage's backend + Secrets -> :class:`RepositoryTarget`.

The URL and environment follow KubeStash's own restic setup, so repositories written by KubeStash open here
and vice versa:

* **local** -- ``local_root(spec.storage.local) / directory`` (default: hostPath.path + subPath).
* **s3** -- ``s3:<endpoint>/<bucket>/<prefix>/<directory>``; the endpoint defaults to ``s3.amazonaws.com`` and
  keeps its scheme (``s3:http://127.0.0.1:5000/...``). Credentials go in ``AWS_*`` variables; ``CA_CERT_DATA``
  becomes a ``--cacert`` file.
* **gcs** -- ``gs:<bucket>:/<prefix>/<directory>``; the service-account key becomes a file named by
  ``GOOGLE_APPLICATION_CREDENTIALS``.
* **azure** -- ``azure:<container>:/<prefix>/<directory>`` with ``AZURE_ACCOUNT_NAME``/``AZURE_ACCOUNT_KEY``.

Files holding secrets are written 0600 under ``scratch_dir`` (the caller's per-task temporary directory,
removed with it). The repository password is used exactly as stored (a trailing newline is part of it, as
in KubeStash, which passes the Secret value through unchanged); provider keys are stripped of whitespace.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from kubestash.api.storage import Backend, LocalSpec
from kubestash.backends.base import BackendError
from kubestash.backends.factory import (
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    AZURE_ACCOUNT_KEY,
    CA_CERT_DATA,
    DEFAULT_S3_REGION,
    GOOGLE_PROJECT_ID,
    GOOGLE_SERVICE_ACCOUNT_JSON_KEY,
    default_local_root,
)
from kubestash.engine.base import EngineError, RepositoryTarget, StorageLocation

RESTIC_PASSWORD = "RESTIC_PASSWORD"
DEFAULT_S3_ENDPOINT = "s3.amazonaws.com"
CACHE_DIR_NAME = "restic-cache"


def repository_target(
    storage: Backend,
    storage_secret: Mapping[str, bytes] | None,
    encryption_secret: Mapping[str, bytes],
    directory: str,
    *,
    scratch_dir: Path,
    local_root: Callable[[LocalSpec], Path] | None = None,
    enable_cache: bool = True,
) -> RepositoryTarget:
    """The restic repository at ``directory`` (``<Repository.spec.path>/<component path>``) of ``storage``.

    Raises ``EngineError("Failed")`` naming the missing field or Secret key -- never a value.
    """
    raw_password = encryption_secret.get(RESTIC_PASSWORD)
    if raw_password is None:
        raise EngineError("Failed", f"the encryption Secret has no {RESTIC_PASSWORD} key")
    password = _text(raw_password, f"the encryption Secret's {RESTIC_PASSWORD}")
    if not password:
        raise EngineError("Failed", f"the encryption Secret's {RESTIC_PASSWORD} is empty")
    values = {k: _text(v, f"the storage Secret's {k}") for k, v in (storage_secret or {}).items()}
    values = {k: v if k in (CA_CERT_DATA, GOOGLE_SERVICE_ACCOUNT_JSON_KEY) else v.strip() for k, v in values.items()}

    env: dict[str, str] = {}
    options: list[str] = []
    provider = storage.provider
    if provider == "local":
        url = _local_url(storage, directory, local_root, options)
    elif provider == "s3":
        url = _s3_url(storage, directory, values, env, options, scratch_dir)
    elif provider == "gcs":
        url = _gcs_url(storage, directory, values, env, options, scratch_dir)
    elif provider == "azure":
        url = _azure_url(storage, directory, values, env, options)
    elif provider is None:
        raise EngineError("Failed", "spec.storage.provider is not set")
    else:
        raise EngineError("Failed", f"spec.storage.provider {provider!r} is not one of local, s3, gcs, azure")

    location = StorageLocation(storage, storage_secret, directory) if provider != "local" else None
    return RepositoryTarget(
        url=url,
        password=password,
        env=env,
        options=tuple(options),
        cache_dir=scratch_dir / CACHE_DIR_NAME if enable_cache else None,
        secrets=_secrets(password, values),
        location=location,
    )


# ---------------------------------------------------------------- providers


def _local_url(
    storage: Backend, directory: str, local_root: Callable[[LocalSpec], Path] | None, options: list[str]
) -> str:
    spec = storage.local
    if spec is None:
        raise _missing("spec.storage.local")
    try:
        root = (local_root or default_local_root)(spec)
    except BackendError as e:
        raise EngineError("Failed", e.message) from None
    _connections(options, "local", spec.max_connections)
    rest = _join(directory)
    return str(root / rest) if rest else str(root)


def _s3_url(
    storage: Backend,
    directory: str,
    values: Mapping[str, str],
    env: dict[str, str],
    options: list[str],
    scratch_dir: Path,
) -> str:
    spec = storage.s3
    if spec is None:
        raise _missing("spec.storage.s3")
    bucket = _required(spec.bucket, "spec.storage.s3.bucket")
    key_id, key_secret = values.get(AWS_ACCESS_KEY_ID), values.get(AWS_SECRET_ACCESS_KEY)
    if (key_id is None) != (key_secret is None):
        missing = AWS_SECRET_ACCESS_KEY if key_secret is None else AWS_ACCESS_KEY_ID
        raise EngineError("Failed", f"the storage Secret has no {missing} key")
    if key_id is not None and key_secret is not None:
        env[AWS_ACCESS_KEY_ID] = key_id
        env[AWS_SECRET_ACCESS_KEY] = key_secret
    env["AWS_DEFAULT_REGION"] = spec.region or DEFAULT_S3_REGION
    ca = values.get(CA_CERT_DATA)
    if ca:
        options += ["--cacert", str(_secret_file(scratch_dir, "ca", ".crt", ca))]
    if spec.insecure_tls:
        options.append("--insecure-tls")
    _connections(options, "s3", spec.max_connections)
    endpoint = (spec.endpoint or DEFAULT_S3_ENDPOINT).rstrip("/")
    return f"s3:{endpoint}/{_join(bucket, spec.prefix, directory)}"


def _gcs_url(
    storage: Backend,
    directory: str,
    values: Mapping[str, str],
    env: dict[str, str],
    options: list[str],
    scratch_dir: Path,
) -> str:
    spec = storage.gcs
    if spec is None:
        raise _missing("spec.storage.gcs")
    bucket = _required(spec.bucket, "spec.storage.gcs.bucket")
    key_json = values.get(GOOGLE_SERVICE_ACCOUNT_JSON_KEY)
    if key_json:
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(_secret_file(scratch_dir, "gcs-sa", ".json", key_json))
    project = values.get(GOOGLE_PROJECT_ID)
    if project:
        env[GOOGLE_PROJECT_ID] = project
    _connections(options, "gs", spec.max_connections)
    return f"gs:{bucket}:/{_join(spec.prefix, directory)}"


def _azure_url(
    storage: Backend, directory: str, values: Mapping[str, str], env: dict[str, str], options: list[str]
) -> str:
    spec = storage.azure
    if spec is None:
        raise _missing("spec.storage.azure")
    account = _required(spec.storage_account, "spec.storage.azure.storageAccount")
    container = _required(spec.container, "spec.storage.azure.container")
    env["AZURE_ACCOUNT_NAME"] = account
    key = values.get(AZURE_ACCOUNT_KEY)
    if key:
        env[AZURE_ACCOUNT_KEY] = key
    _connections(options, "azure", spec.max_connections)
    return f"azure:{container}:/{_join(spec.prefix, directory)}"


# ---------------------------------------------------------------- helpers


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise EngineError("Failed", f"{what} is not UTF-8 text") from None


def _join(*parts: str | None) -> str:
    """Slash-join the non-empty parts without doubled, leading or trailing slashes."""
    segments = [s for p in parts if p for s in p.split("/") if s]
    return "/".join(segments)


def _required(value: str | None, field: str) -> str:
    if not value:
        raise _missing(field)
    return value


def _missing(field: str) -> EngineError:
    return EngineError("Failed", f"{field} is not set")


def _connections(options: list[str], backend: str, max_connections: int | None) -> None:
    if max_connections and max_connections > 0:
        options += ["-o", f"{backend}.connections={max_connections}"]


def _secret_file(scratch_dir: Path, stem: str, suffix: str, content: str) -> Path:
    """Write ``content`` to a 0600 file; named by its hash so targets sharing ``scratch_dir`` do not collide."""
    scratch_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(content.encode()).hexdigest()[:16]
    path = scratch_dir / f"{stem}-{digest}{suffix}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content.encode())
    finally:
        os.close(fd)
    return path


def _secrets(password: str, values: Mapping[str, str]) -> tuple[str, ...]:
    """The password and every Secret value worth scrubbing (the CA certificate is public)."""
    found = [password, *(v for k, v in values.items() if k != CA_CERT_DATA and v)]
    key_json = values.get(GOOGLE_SERVICE_ACCOUNT_JSON_KEY)
    if key_json:
        try:
            doc = json.loads(key_json)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            found += [str(doc[f]) for f in ("private_key", "private_key_id") if doc.get(f)]
    if password.strip() and password.strip() != password:
        found.append(password.strip())
    return tuple(dict.fromkeys(found))
