"""The standard-library kubeconfig reader and API client ``kubestash trigger`` uses, against a real TLS server."""

from __future__ import annotations

import base64
import datetime
import json
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubestash.apiserver.security import ensure_credentials
from kubestash.cli.kubeapi import (
    ApiFailure,
    ConfigError,
    KubeApi,
    Unreachable,
    load_kubeconfig,
    proxy_for,
    select_context,
)
from kubestash.cli.triggering import parse_args

KUBESTASH = Path(sys.prefix) / "bin" / "kubestash"

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: kubestash
  cluster:
    server: https://127.0.0.1:6443/prefix
    certificate-authority-data: LS0tLS1CRUdJTi==
users:
- name: kubestash-admin
  user:
    token: 0gD6abc
contexts:
- name: kubestash
  context:
    cluster: kubestash
    user: kubestash-admin
    namespace: team-a
current-context: kubestash
preferences: {}
"""


def test_yaml_and_json_kubeconfigs_read_alike(tmp_path: Path) -> None:
    """A kubeconfig as `kubestash up` or kubectl writes it (YAML; a token starting with a digit stays a string),
    and the same as JSON (which skips importing PyYAML): the same server, namespace and token."""
    as_yaml, as_json = tmp_path / "config.yaml", tmp_path / "config.json"
    as_yaml.write_text(KUBECONFIG)
    as_json.write_text(json.dumps(yaml.safe_load(KUBECONFIG)))
    read = [load_kubeconfig(path) for path in (as_yaml, as_json)]
    assert read[0] == read[1]
    assert (read[0].server, read[0].namespace, read[0].token) == ("https://127.0.0.1:6443/prefix", "team-a", "0gD6abc")


def test_broken_yaml_is_named_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("clusters: [unclosed\n")
    with pytest.raises(ConfigError, match="not YAML"):
        load_kubeconfig(path)


def test_contexts_users_and_relative_files(tmp_path: Path) -> None:
    conf = yaml.safe_load(KUBECONFIG)
    conf["clusters"].append({"name": "files", "cluster": {"server": "https://h", "certificate-authority": "ca.crt"}})
    conf["users"].append({"name": "cert", "user": {"client-certificate": "c.crt", "client-key": "/abs/c.key"}})
    conf["contexts"].append({"name": "other", "context": {"cluster": "files", "user": "cert"}})
    access = select_context(conf, tmp_path / "config", None)
    assert (access.server, access.namespace, access.token) == ("https://127.0.0.1:6443/prefix", "team-a", "0gD6abc")
    assert "0gD6abc" not in repr(access)
    other = select_context(conf, tmp_path / "config", "other")
    assert other.namespace == "default" and other.token is None
    assert other.ca_file == str(tmp_path / "ca.crt")
    assert other.client_cert == (str(tmp_path / "c.crt"), "/abs/c.key")
    with pytest.raises(ConfigError, match="Context 'nope' not found"):
        select_context(conf, tmp_path / "config", "nope")
    with pytest.raises(ConfigError, match="No current context"):
        select_context({**conf, "current-context": None}, tmp_path / "config", None)


def test_proxies_from_the_environment() -> None:
    env = {"HTTPS_PROXY": "proxy:3128", "NO_PROXY": "localhost,.internal"}
    assert proxy_for("https", "api.example.com", env) == "http://proxy:3128"
    assert proxy_for("https", "k8s.internal", env) is None
    assert proxy_for("https", "localhost", env) is None
    assert proxy_for("http", "api.example.com", env) is None
    assert proxy_for("https", "x", {**env, "no_proxy": "*", "NO_PROXY": ""}) is None


def test_trigger_arguments_click_would_read_the_same_way(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("{}")
    assert parse_args(["bc", "-n", "ns", "--wait", "--timeout=5", "--kubeconfig", str(config)]) == {
        "backupconfiguration": "bc",
        "namespace": "ns",
        "wait": True,
        "timeout": 5.0,
        "kubeconfig": config,
    }
    assert parse_args(["--sessions=a,b", "bc", "--context", "c"]) == {
        "backupconfiguration": "bc",
        "sessions": "a,b",
        "context": "c",
    }
    for args in (
        [],
        ["--help"],
        ["bc", "-h"],
        ["bc", "other"],
        ["bc", "-nns"],
        ["bc", "--wait=1"],
        ["bc", "--timeout", "soon"],
        ["bc", "--sessions"],
        ["bc", "--kubeconfig", str(tmp_path / "missing")],
        ["bc", "--kubeconfig", str(tmp_path)],
        ["bc", "--", "x"],
    ):
        assert parse_args(args) is None, args


# ------------------------------------------------------------------ a real TLS server
def _client_cert(tmp_path: Path) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubestash-test-client")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict[str, Any]]] = []

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        subject = dict(x[0] for x in peer["subject"]) if peer else {}
        self.seen.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "cn": subject.get("commonName")}
        )
        if self.path.endswith("/missing"):
            self._answer(404, {"kind": "Status", "code": 404, "message": 'x "missing" not found', "reason": "NotFound"})
        else:
            self._answer(200, {"ok": True, "path": self.path})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._answer(201, {"created": body})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, str, tuple[bytes, bytes]]]:
    """An HTTPS server requiring a client certificate: (server URL, CA data, client (cert, key) PEM)."""
    creds = ensure_credentials(tmp_path / "server")
    client = _client_cert(tmp_path)
    context = creds.ssl_context()
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=client[0].decode())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.seen = []
    yield f"https://127.0.0.1:{httpd.server_address[1]}/prefix", creds.ca_data(), client
    httpd.shutdown()
    httpd.server_close()


def _kubeconfig(server: str, cluster: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    return {
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "team"}}],
        "current-context": "ctx",
    }


def test_client_certificate_data_token_and_ca_data(tls_server: tuple[str, str, tuple[bytes, bytes]]) -> None:
    server, ca_data, (cert, key) = tls_server
    user = {
        "client-certificate-data": base64.b64encode(cert).decode(),
        "client-key-data": base64.b64encode(key).decode(),
        "token": "s3cret",
    }
    access = select_context(_kubeconfig(server, {"certificate-authority-data": ca_data}, user), Path("/x"), None)
    assert access.namespace == "team"
    with KubeApi(access) as api:
        assert api.get("/api/one")["path"] == "/prefix/api/one"
        assert api.get("/api/two")["ok"] is True  # the same connection, kept alive
        assert api.post("/api/objects", {"a": 1}) == {"created": {"a": 1}}
        with pytest.raises(ApiFailure) as failure:
            api.get("/api/missing")
    assert (failure.value.code, failure.value.message) == (404, 'x "missing" not found')
    assert [s["auth"] for s in _Handler.seen] == ["Bearer s3cret"] * 3
    assert {s["cn"] for s in _Handler.seen} == {"kubestash-test-client"}


def test_client_certificate_files_and_ca_file(tls_server: tuple[str, str, tuple[bytes, bytes]], tmp_path: Path) -> None:
    server, ca_data, (cert, key) = tls_server
    (tmp_path / "ca.crt").write_bytes(base64.b64decode(ca_data))
    (tmp_path / "client.crt").write_bytes(cert)
    (tmp_path / "client.key").write_bytes(key)
    conf = _kubeconfig(
        server, {"certificate-authority": "ca.crt"}, {"client-certificate": "client.crt", "client-key": "client.key"}
    )
    (tmp_path / "config").write_text(yaml.safe_dump(conf))
    with KubeApi(load_kubeconfig(tmp_path / "config")) as api:
        assert api.get("/api")["ok"] is True
    assert _Handler.seen[-1]["auth"] is None


def test_an_untrusted_server_is_refused_unless_insecure(tls_server: tuple[str, str, tuple[bytes, bytes]]) -> None:
    server, _, (cert, key) = tls_server
    user = {
        "client-certificate-data": base64.b64encode(cert).decode(),
        "client-key-data": base64.b64encode(key).decode(),
    }
    trusting_nobody = select_context(_kubeconfig(server, {}, user), Path("/x"), None)
    with KubeApi(trusting_nobody) as api, pytest.raises(Unreachable, match="CERTIFICATE_VERIFY_FAILED"):
        api.get("/api")
    insecure = select_context(_kubeconfig(server, {"insecure-skip-tls-verify": True}, user), Path("/x"), None)
    with KubeApi(insecure) as api:
        assert api.get("/api")["ok"] is True


def test_trigger_without_a_server_is_one_line(tmp_path: Path) -> None:
    """Connection refused: a one-line error and exit code 1 from the installed command, no traceback."""
    conf = _kubeconfig("https://127.0.0.1:1", {"insecure-skip-tls-verify": True}, {"token": "s3cret"})
    (tmp_path / "config").write_text(yaml.safe_dump(conf))
    result = subprocess.run(
        [str(KUBESTASH), "trigger", "bc", "--kubeconfig", str(tmp_path / "config")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == "Error: cannot reach the API server: [Errno 111] Connection refused\n"
    assert result.stdout == ""
