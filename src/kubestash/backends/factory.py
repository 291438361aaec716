"""Build the :class:`ObjectBackend` a BackupStorage describes: its ``spec.storage`` plus its Secret's data.

S3, Azure and local directories are served by obstore (:class:`~kubestash.backends.object_store.ObstoreBackend`),
GCS by Google's own client (:class:`~kubestash.backends.gcs.GcsBackend`, which says why), so this module
only translates KubeStash's fields and Secret keys into client configuration, and rejects incomplete ones
with ``BackendError("InvalidConfiguration")`` naming the field or key -- never a value.

Provider notes:

* **s3** -- ``endpoint`` may omit the scheme (https is assumed); ``http://`` is allowed. A custom endpoint
  (MinIO, Ceph, moto) is addressed path-style. ``insecureTLS`` skips certificate checks; ``CA_CERT_DATA``
  is added to the trusted roots (obstore's ``root_certificate`` client option, in memory -- no temp file).
  Without ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` obstore's default chain is used (environment,
  web identity / IRSA, container and instance metadata).
* **gcs** -- ``GOOGLE_SERVICE_ACCOUNT_JSON_KEY`` is the service-account key JSON; without a Secret
  application-default credentials apply. ``GOOGLE_PROJECT_ID`` names the client's project (object access
  needs only the bucket). ``STORAGE_EMULATOR_HOST`` redirects requests to an emulator.
* **azure** -- ``storageAccount``, ``container`` and ``AZURE_ACCOUNT_KEY`` (shared key); without a Secret
  obstore's default chain applies (workload identity, managed identity). The blob endpoint can be
  overridden with the ``endpoint`` keyword (azurite in tests, embedded mode), e.g.
  ``http://127.0.0.1:10000/devstoreaccount1``.
* **local** -- a directory given by ``local_root(spec.storage.local)``; by default ``hostPath.path`` joined
  with ``subPath`` (the embedded executor passes a resolver that maps PVC/NFS volumes to directories).

``maxConnections`` caps concurrent requests in the backend (obstore's HTTP client has no connection limit,
only an idle-pool size, which is set to the same number).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from obstore.store import AzureStore, LocalStore, S3Store

from kubestash.api.storage import Backend, LocalSpec
from kubestash.backends.base import BackendError, ObjectBackend
from kubestash.backends.object_store import ObstoreBackend, classify

if TYPE_CHECKING:
    from obstore.store import AzureConfig, ClientConfig, RetryConfig, S3Config

DEFAULT_S3_REGION = "us-east-1"

AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
CA_CERT_DATA = "CA_CERT_DATA"
GOOGLE_SERVICE_ACCOUNT_JSON_KEY = "GOOGLE_SERVICE_ACCOUNT_JSON_KEY"
GOOGLE_PROJECT_ID = "GOOGLE_PROJECT_ID"
AZURE_ACCOUNT_KEY = "AZURE_ACCOUNT_KEY"


def open_backend(
    storage: Backend,
    secret: Mapping[str, bytes] | None,
    *,
    local_root: Callable[[LocalSpec], Path] | None = None,
    endpoint: str | None = None,
    retry_config: RetryConfig | None = None,
) -> ObjectBackend:
    """The backend for a BackupStorage's ``spec.storage`` and the data of the Secret it names (None: no Secret).

    ``endpoint`` overrides the Azure blob endpoint (azurite); ``retry_config`` overrides obstore's retries
    (tests use ``{"max_retries": 0}`` to fail fast on unreachable endpoints).
    """
    provider = storage.provider
    if provider is None:
        raise BackendError("InvalidConfiguration", "spec.storage.provider is not set")
    values = _decode(secret)
    if provider == "s3":
        return _s3(storage, values, retry_config)
    if provider == "gcs":
        return _gcs(storage, values, retry_config)
    if provider == "azure":
        return _azure(storage, values, endpoint, retry_config)
    if provider == "local":
        return _local(storage, local_root)
    raise BackendError(
        "InvalidConfiguration", f"spec.storage.provider {provider!r} is not one of local, s3, gcs, azure"
    )


def default_local_root(spec: LocalSpec) -> Path:
    """``hostPath.path`` joined with ``subPath``: what a hostPath volume mounted at mountPath shows."""
    host_path = (spec.model_extra or {}).get("hostPath")
    path = host_path.get("path") if isinstance(host_path, Mapping) else None
    if not isinstance(path, str) or not path:
        raise BackendError(
            "InvalidConfiguration",
            "spec.storage.local: only hostPath volumes can be opened here (hostPath.path is not set)",
        )
    root = Path(path)
    if spec.sub_path:
        root = root / spec.sub_path.strip("/")
    return root


# ---------------------------------------------------------------- providers


def _s3(storage: Backend, values: dict[str, str], retry_config: RetryConfig | None) -> ObjectBackend:
    spec = storage.s3
    if spec is None:
        raise _missing_field("spec.storage.s3")
    bucket = _required(spec.bucket, "spec.storage.s3.bucket")
    key_id = values.get(AWS_ACCESS_KEY_ID)
    key_secret = values.get(AWS_SECRET_ACCESS_KEY)
    if (key_id is None) != (key_secret is None):
        missing = AWS_SECRET_ACCESS_KEY if key_secret is None else AWS_ACCESS_KEY_ID
        raise BackendError("InvalidConfiguration", f"the storage Secret has no {missing} key")

    options: ClientConfig = {}
    endpoint: str | None = None
    if spec.endpoint:
        endpoint = spec.endpoint.rstrip("/")
        if "://" not in endpoint:
            endpoint = f"https://{endpoint}"
        scheme = endpoint.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise BackendError("InvalidConfiguration", "spec.storage.s3.endpoint must be an http or https URL")
        if scheme == "http":
            options["allow_http"] = True
    if spec.insecure_tls:
        options["allow_invalid_certificates"] = True
    ca = values.get(CA_CERT_DATA)
    if ca:
        options["root_certificate"] = ca
    _pool(options, spec.max_connections)

    config: S3Config = {"region": spec.region or DEFAULT_S3_REGION}
    if endpoint:
        config["endpoint"] = endpoint
        config["virtual_hosted_style_request"] = False
    if key_id is not None and key_secret is not None:
        config["access_key_id"] = key_id
        config["secret_access_key"] = key_secret
    try:
        store = S3Store(bucket, config=config, client_options=options, retry_config=retry_config)
    except Exception as e:
        raise _config_error(e, "s3", values) from None
    return ObstoreBackend(
        store,
        description=_describe("s3", bucket, spec.prefix),
        prefix=spec.prefix or "",
        secrets=_secret_values(values),
        max_connections=spec.max_connections,
    )


def _gcs(storage: Backend, values: dict[str, str], retry_config: RetryConfig | None) -> ObjectBackend:
    spec = storage.gcs
    if spec is None:
        raise _missing_field("spec.storage.gcs")
    bucket = _required(spec.bucket, "spec.storage.gcs.bucket")
    # Imported here: Google's client stack costs ~0.2 s to import, which every task process would pay.
    from kubestash.backends.gcs import GcsBackend, build_credentials, emulator_host

    emulator = emulator_host()
    key_json = values.get(GOOGLE_SERVICE_ACCOUNT_JSON_KEY)
    if values and key_json is None and emulator is None:
        raise BackendError("InvalidConfiguration", f"the storage Secret has no {GOOGLE_SERVICE_ACCOUNT_JSON_KEY} key")
    credentials = build_credentials(key_json, emulator=emulator is not None)
    no_retry = retry_config is not None and retry_config.get("max_retries") == 0
    return GcsBackend(
        bucket,
        credentials=credentials,
        project=values.get(GOOGLE_PROJECT_ID),
        endpoint=emulator,
        description=_describe("gs", bucket, spec.prefix),
        prefix=spec.prefix or "",
        secrets=_secret_values(values),
        max_connections=spec.max_connections,
        retry_timeout=None if no_retry else 60.0,
    )


def _azure(
    storage: Backend, values: dict[str, str], endpoint: str | None, retry_config: RetryConfig | None
) -> ObjectBackend:
    spec = storage.azure
    if spec is None:
        raise _missing_field("spec.storage.azure")
    account = _required(spec.storage_account, "spec.storage.azure.storageAccount")
    container = _required(spec.container, "spec.storage.azure.container")
    key = values.get(AZURE_ACCOUNT_KEY)
    if values and key is None:
        raise BackendError("InvalidConfiguration", f"the storage Secret has no {AZURE_ACCOUNT_KEY} key")
    options: ClientConfig = {}
    if endpoint and endpoint.startswith("http://"):
        options["allow_http"] = True
    _pool(options, spec.max_connections)
    config: AzureConfig = {"account_name": account}
    if key is not None:
        config["account_key"] = key
    if endpoint:
        config["endpoint"] = endpoint.rstrip("/")
    try:
        store = AzureStore(container, config=config, client_options=options, retry_config=retry_config)
    except Exception as e:
        raise _config_error(e, "azure", values) from None
    return ObstoreBackend(
        store,
        description=_describe(f"azure://{account}", container, spec.prefix, scheme_given=True),
        prefix=spec.prefix or "",
        secrets=_secret_values(values),
        max_connections=spec.max_connections,
    )


def _local(storage: Backend, local_root: Callable[[LocalSpec], Path] | None) -> ObjectBackend:
    spec = storage.local
    if spec is None:
        raise _missing_field("spec.storage.local")
    root = (local_root or default_local_root)(spec)
    try:
        root.mkdir(parents=True, exist_ok=True)
        store = LocalStore(root, mkdir=True)
    except Exception as e:
        raise BackendError("InvalidConfiguration", f"local directory {root}: {e}") from None
    return ObstoreBackend(store, description=f"local://{root}", max_connections=spec.max_connections)


# ---------------------------------------------------------------- helpers


def _decode(secret: Mapping[str, bytes] | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, raw in (secret or {}).items():
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise BackendError("InvalidConfiguration", f"the storage Secret's {key} is not UTF-8 text") from None
        values[key] = text if key in (CA_CERT_DATA, GOOGLE_SERVICE_ACCOUNT_JSON_KEY) else text.strip()
    return values


def _secret_values(values: Mapping[str, str]) -> list[str]:
    """Every value worth scrubbing from messages (whole values and, for JSON keys, their private key)."""
    found = [v for k, v in values.items() if k != CA_CERT_DATA and len(v) >= 4]
    key_json = values.get(GOOGLE_SERVICE_ACCOUNT_JSON_KEY)
    if key_json:
        try:
            doc = json.loads(key_json)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            found += [str(doc[f]) for f in ("private_key", "private_key_id") if doc.get(f)]
    return found


def _required(value: str | None, field: str) -> str:
    if not value:
        raise _missing_field(field)
    return value


def _missing_field(field: str) -> BackendError:
    return BackendError("InvalidConfiguration", f"{field} is not set")


def _pool(options: ClientConfig, max_connections: int | None) -> None:
    if max_connections and max_connections > 0:
        options["pool_max_idle_per_host"] = str(max_connections)


def _describe(scheme: str, bucket: str, prefix: str | None, *, scheme_given: bool = False) -> str:
    base = f"{scheme}/{bucket}" if scheme_given else f"{scheme}://{bucket}"
    rest = (prefix or "").strip("/")
    return f"{base}/{rest}" if rest else base


def _config_error(exc: Exception, provider: str, values: Mapping[str, str]) -> BackendError:
    reason, detail = classify(exc)
    for secret in sorted(_secret_values(values), key=len, reverse=True):
        detail = detail.replace(secret, "***")
    # A malformed key (e.g. an Azure key that is not base64) is a credentials problem; the rest is configuration.
    return BackendError(
        reason if reason == "InvalidCredentials" else "InvalidConfiguration", f"{provider} configuration: {detail}"
    )
