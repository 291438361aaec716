"""repository_target: KubeStash's restic URL, environment and flags for every provider, secret files 0600,
and configuration errors that name the missing key but never a value."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from kubestash.api.storage import Backend, LocalSpec
from kubestash.engine.base import EngineError, RepositoryTarget
from kubestash.engine.location import repository_target

PASSWORD = b"repo-password-0123456789"
ENCRYPTION = {"RESTIC_PASSWORD": PASSWORD}
DIRECTORY = "demo/app/repository/v1/frequent-backup/dump"
AWS = {"AWS_ACCESS_KEY_ID": b"AKIAEXAMPLE1234", "AWS_SECRET_ACCESS_KEY": b"aws-secret-key-0123456789\n"}


def target(
    doc: dict[str, Any],
    tmp_path: Path,
    secret: dict[str, bytes] | None = None,
    *,
    encryption: dict[str, bytes] | None = None,
    **kwargs: Any,
) -> RepositoryTarget:
    return repository_target(
        Backend.model_validate(doc),
        secret,
        ENCRYPTION if encryption is None else encryption,
        DIRECTORY,
        scratch_dir=tmp_path / "scratch",
        **kwargs,
    )


def test_local_uses_host_path_and_sub_path(tmp_path: Path) -> None:
    doc = {"provider": "local", "local": {"mountPath": "/kubestash", "subPath": "sub/", "hostPath": {"path": "/data"}}}
    repo = target(doc, tmp_path)
    assert repo.url == f"/data/sub/{DIRECTORY}"
    assert repo.password == PASSWORD.decode()
    assert repo.env == {}
    assert repo.options == ()
    assert repo.cache_dir == tmp_path / "scratch" / "restic-cache"
    assert repo.secrets == (PASSWORD.decode(),)


def test_local_root_resolver_and_connections(tmp_path: Path) -> None:
    def resolver(spec: LocalSpec) -> Path:
        assert spec.mount_path == "/kubestash"
        return tmp_path / "volume"

    doc = {"provider": "local", "local": {"mountPath": "/kubestash", "maxConnections": 4, "persistentVolumeClaim": {}}}
    repo = target(doc, tmp_path, local_root=resolver, enable_cache=False)
    assert repo.url == str(tmp_path / "volume" / DIRECTORY)
    assert repo.options == ("-o", "local.connections=4")
    assert repo.cache_dir is None


def test_local_without_host_path_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as info:
        target({"provider": "local", "local": {"mountPath": "/x", "nfs": {}}}, tmp_path)
    assert info.value.reason == "Failed"
    assert "hostPath" in info.value.message


def test_s3_defaults(tmp_path: Path) -> None:
    repo = target({"provider": "s3", "s3": {"bucket": "backups"}}, tmp_path, AWS)
    assert repo.url == f"s3:s3.amazonaws.com/backups/{DIRECTORY}"
    assert repo.env == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE1234",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-key-0123456789",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    assert repo.options == ()
    assert "aws-secret-key-0123456789" in repo.secrets
    assert PASSWORD.decode() in repo.secrets


def test_s3_endpoint_prefix_region_tls_and_connections(tmp_path: Path) -> None:
    doc = {
        "provider": "s3",
        "s3": {
            "endpoint": "http://127.0.0.1:5000/",
            "bucket": "backups",
            "prefix": "/cluster-a/",
            "region": "eu-west-2",
            "insecureTLS": True,
            "maxConnections": 8,
        },
    }
    repo = target(doc, tmp_path, {**AWS, "CA_CERT_DATA": b"-----BEGIN CERTIFICATE-----\nabc\n"})
    assert repo.url == f"s3:http://127.0.0.1:5000/backups/cluster-a/{DIRECTORY}"
    assert repo.env["AWS_DEFAULT_REGION"] == "eu-west-2"
    assert repo.options[0] == "--cacert"
    ca = Path(repo.options[1])
    assert ca.parent == tmp_path / "scratch"
    assert ca.read_text() == "-----BEGIN CERTIFICATE-----\nabc\n"
    assert stat.S_IMODE(ca.stat().st_mode) == 0o600
    assert repo.options[2:] == ("--insecure-tls", "-o", "s3.connections=8")
    assert not any("BEGIN CERTIFICATE" in s for s in repo.secrets)


def test_s3_without_secret_uses_ambient_credentials(tmp_path: Path) -> None:
    repo = target({"provider": "s3", "s3": {"endpoint": "https://minio:9000", "bucket": "b"}}, tmp_path)
    assert repo.url == f"s3:https://minio:9000/b/{DIRECTORY}"
    assert repo.env == {"AWS_DEFAULT_REGION": "us-east-1"}


def test_s3_half_a_key_pair_names_the_missing_key(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as info:
        target({"provider": "s3", "s3": {"bucket": "b"}}, tmp_path, {"AWS_ACCESS_KEY_ID": AWS["AWS_ACCESS_KEY_ID"]})
    assert "AWS_SECRET_ACCESS_KEY" in info.value.message
    assert "AKIAEXAMPLE1234" not in info.value.message


def test_gcs_writes_service_account_file(tmp_path: Path) -> None:
    key = {
        "type": "service_account",
        "private_key": "-----BEGIN PRIVATE KEY-----\nxyz\n",
        "private_key_id": "kid-123456",
    }
    secret = {"GOOGLE_PROJECT_ID": b"my-project", "GOOGLE_SERVICE_ACCOUNT_JSON_KEY": json.dumps(key).encode()}
    doc = {"provider": "gcs", "gcs": {"bucket": "gb", "prefix": "p/q", "maxConnections": 3}}
    repo = target(doc, tmp_path, secret)
    assert repo.url == f"gs:gb:/p/q/{DIRECTORY}"
    assert repo.env["GOOGLE_PROJECT_ID"] == "my-project"
    credentials = Path(repo.env["GOOGLE_APPLICATION_CREDENTIALS"])
    assert json.loads(credentials.read_text()) == key
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert repo.options == ("-o", "gs.connections=3")
    assert key["private_key"] in repo.secrets
    assert json.dumps(key) in repo.secrets


def test_gcs_without_prefix_has_no_double_slash(tmp_path: Path) -> None:
    repo = target({"provider": "gcs", "gcs": {"bucket": "gb"}}, tmp_path)
    assert repo.url == f"gs:gb:/{DIRECTORY}"
    assert repo.env == {}


def test_azure(tmp_path: Path) -> None:
    doc = {"provider": "azure", "azure": {"storageAccount": "acct", "container": "ctr", "maxConnections": 2}}
    repo = target(doc, tmp_path, {"AZURE_ACCOUNT_KEY": b"azure-key-0123456789=="})
    assert repo.url == f"azure:ctr:/{DIRECTORY}"
    assert repo.env == {"AZURE_ACCOUNT_NAME": "acct", "AZURE_ACCOUNT_KEY": "azure-key-0123456789=="}
    assert repo.options == ("-o", "azure.connections=2")
    assert "azure-key-0123456789==" in repo.secrets


def test_azure_prefix(tmp_path: Path) -> None:
    doc = {"provider": "azure", "azure": {"storageAccount": "acct", "container": "ctr", "prefix": "x/"}}
    assert target(doc, tmp_path).url == f"azure:ctr:/x/{DIRECTORY}"


def test_missing_password_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as info:
        target({"provider": "s3", "s3": {"bucket": "b"}}, tmp_path, AWS, encryption={"OTHER": PASSWORD})
    assert info.value.reason == "Failed"
    assert "RESTIC_PASSWORD" in info.value.message
    assert PASSWORD.decode() not in info.value.message


def test_repr_shows_no_secret(tmp_path: Path) -> None:
    repo = target({"provider": "s3", "s3": {"bucket": "b"}}, tmp_path, AWS)
    assert PASSWORD.decode() not in repr(repo)
    assert "aws-secret-key" not in repr(repo)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({}, "spec.storage.provider"),
        ({"provider": "nfs"}, "spec.storage.provider"),
        ({"provider": "s3"}, "spec.storage.s3"),
        ({"provider": "s3", "s3": {}}, "spec.storage.s3.bucket"),
        ({"provider": "gcs", "gcs": {}}, "spec.storage.gcs.bucket"),
        ({"provider": "azure", "azure": {"container": "c"}}, "spec.storage.azure.storageAccount"),
        ({"provider": "azure", "azure": {"storageAccount": "a"}}, "spec.storage.azure.container"),
        ({"provider": "local"}, "spec.storage.local"),
    ],
)
def test_incomplete_storage_names_the_field(doc: dict[str, Any], field: str, tmp_path: Path) -> None:
    with pytest.raises(EngineError) as info:
        target(doc, tmp_path, AWS)
    assert info.value.reason == "Failed"
    assert field in info.value.message
    assert "aws-secret-key" not in info.value.message
