"""open_backend's validation: an incomplete BackupStorage or Secret is an InvalidConfiguration that names the
missing field or key and never shows a secret value; complete ones open without touching the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubestash.api.storage import Backend, LocalSpec
from kubestash.backends.base import BackendError
from kubestash.backends.factory import default_local_root, open_backend
from kubestash.backends.gcs import GcsBackend
from kubestash.backends.keys import KeySpace
from kubestash.backends.object_store import ObstoreBackend, summarize

SECRET = "super-secret-value-0123456789"


def storage(doc: dict[str, Any]) -> Backend:
    return Backend.model_validate(doc)


def invalid(doc: dict[str, Any], secret: dict[str, bytes] | None = None) -> BackendError:
    with pytest.raises(BackendError) as info:
        open_backend(storage(doc), secret)
    assert info.value.reason == "InvalidConfiguration", info.value.message
    assert SECRET not in info.value.message
    return info.value


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({}, "spec.storage.provider"),
        ({"provider": "s3"}, "spec.storage.s3"),
        ({"provider": "s3", "s3": {"endpoint": "minio:9000"}}, "spec.storage.s3.bucket"),
        ({"provider": "gcs", "gcs": {"prefix": "x"}}, "spec.storage.gcs.bucket"),
        ({"provider": "azure", "azure": {"container": "c"}}, "spec.storage.azure.storageAccount"),
        ({"provider": "azure", "azure": {"storageAccount": "acct"}}, "spec.storage.azure.container"),
        ({"provider": "local"}, "spec.storage.local"),
        ({"provider": "local", "local": {"mountPath": "/repo"}}, "hostPath.path"),
        ({"provider": "ftp"}, "'ftp'"),
    ],
)
def test_missing_field_is_named(doc: dict[str, Any], field: str) -> None:
    assert field in invalid(doc).message


@pytest.mark.parametrize(
    ("doc", "secret", "key"),
    [
        (
            {"provider": "s3", "s3": {"bucket": "b"}},
            {"AWS_ACCESS_KEY_ID": SECRET.encode()},
            "AWS_SECRET_ACCESS_KEY",
        ),
        (
            {"provider": "s3", "s3": {"bucket": "b"}},
            {"AWS_SECRET_ACCESS_KEY": SECRET.encode()},
            "AWS_ACCESS_KEY_ID",
        ),
        (
            {"provider": "azure", "azure": {"storageAccount": "acct", "container": "c"}},
            {"AZURE_ACCOUNT_KEY_TYPO": SECRET.encode()},
            "AZURE_ACCOUNT_KEY",
        ),
        (
            {"provider": "gcs", "gcs": {"bucket": "b"}},
            {"GOOGLE_PROJECT_ID": SECRET.encode()},
            "GOOGLE_SERVICE_ACCOUNT_JSON_KEY",
        ),
    ],
)
def test_missing_secret_key_is_named(
    doc: dict[str, Any], secret: dict[str, bytes], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    err = invalid(doc, secret)
    assert key in err.message


def test_bad_endpoint_scheme() -> None:
    err = invalid({"provider": "s3", "s3": {"bucket": "b", "endpoint": "ftp://host"}})
    assert "spec.storage.s3.endpoint" in err.message


def test_non_utf8_secret_value() -> None:
    err = invalid({"provider": "s3", "s3": {"bucket": "b"}}, {"AWS_ACCESS_KEY_ID": b"\xff\xfe"})
    assert "AWS_ACCESS_KEY_ID" in err.message


def test_complete_specs_open_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    s3 = open_backend(
        storage(
            {
                "provider": "s3",
                "s3": {"endpoint": "minio.local:9000", "bucket": "b", "prefix": "/team/", "insecureTLS": True},
            }
        ),
        {"AWS_ACCESS_KEY_ID": b"id", "AWS_SECRET_ACCESS_KEY": SECRET.encode()},
    )
    assert s3.description == "s3://b/team"
    assert isinstance(s3, ObstoreBackend)
    gcs = open_backend(storage({"provider": "gcs", "gcs": {"bucket": "g", "prefix": "p/"}}), None)
    assert gcs.description == "gs://g/p"
    assert isinstance(gcs, GcsBackend)
    az = open_backend(
        storage({"provider": "azure", "azure": {"storageAccount": "acct", "container": "c", "prefix": "p"}}),
        {"AZURE_ACCOUNT_KEY": b"c2VjcmV0"},
    )
    assert az.description == "azure://acct/c/p"
    local = open_backend(
        storage({"provider": "local", "local": {"mountPath": "/r", "subPath": "a/b", "hostPath": {"path": "/x"}}}),
        None,
        local_root=lambda spec: tmp_path / "custom",
    )
    assert local.description == f"local://{tmp_path / 'custom'}"
    assert (tmp_path / "custom").is_dir()


def test_default_local_root_joins_sub_path() -> None:
    spec = LocalSpec.model_validate({"mountPath": "/r", "subPath": "/a/b/", "hostPath": {"path": "/data"}})
    assert default_local_root(spec) == Path("/data/a/b")
    spec = LocalSpec.model_validate({"mountPath": "/r", "hostPath": {"path": "/data"}})
    assert default_local_root(spec) == Path("/data")


def test_keyspace_scrubs_every_secret_and_applies_the_prefix() -> None:
    keys = KeySpace("x", "/team/", secrets=["abc", "abcdef", ""])
    assert keys.scrub("key abcdef and abc") == "key *** and ***"
    assert keys.key("/a/b/") == "team/a/b" and keys.join("") == "team" and keys.relative("team/a") == "a"
    assert KeySpace("y").join("a") == "a"


def test_summarize_reads_xml_error() -> None:
    text = (
        "Object at location a not found: Error performing GET http://h/b/a in 2ms - Server returned non-2xx "
        "status code: 404 Not Found: <?xml version='1.0'?>\n<Error><Code>NoSuchBucket</Code>"
        "<Message>The specified bucket does not exist</Message></Error>\n\nDebug source:\nNotFound {...}"
    )
    assert summarize(text) == "HTTP 404 Not Found, NoSuchBucket: The specified bucket does not exist"
    assert summarize("Generic error: boom\n\nDebug source: x") == "Generic error: boom"
    assert len(summarize("x" * 5000)) == 400


class _FakeStore:
    pass


def test_unusable_ca_certificate() -> None:
    doc = {"provider": "s3", "s3": {"bucket": "b"}}
    err = invalid(doc, {"CA_CERT_DATA": b"-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"})
    assert err.message.startswith("s3 configuration")
