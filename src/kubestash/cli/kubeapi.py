"""A small Kubernetes API client on the standard library, for the commands that must start quickly.

``kubestash trigger <bc> --wait`` is how a user backs up by hand and what ``bench/backup.py`` times as an
unchanged incremental backup, so its start-up is part of every such backup. With lightkube the process needed
0.31-0.47 s from start until its BackupSession existed, almost all of it imports: lightkube with msgspec
(about 0.12 s), httpx2 (0.13 s), click (0.06 s), PyYAML (0.04 s). The few calls ``trigger`` makes (GET a
BackupConfiguration, POST BackupSessions, GET BackupSessions and Snapshots while waiting) need none of that:
``http.client`` + ``ssl`` + ``json`` (about 0.03 s to import) do them on one kept-alive connection, and the
kubeconfig is read with PyYAML's libyaml loader (JSON ones with :mod:`json`). Start-up time measured:
BackupSession created 0.07-0.09 s after process start vs 0.34-0.47 s (details in
:mod:`kubestash.cli.triggering`).

Supported as lightkube supports it: ``--kubeconfig``/``$KUBECONFIG``/``~/.kube/config``/``kubestash up``'s file,
contexts (``current-context`` or ``--context``), the context's namespace, ``server`` (with a path prefix),
``certificate-authority(-data)`` (else the system's trust store; ``insecure-skip-tls-verify`` only without a
CA), ``client-certificate(-data)``/``client-key(-data)``, ``token``, ``tokenFile``, ``username``/``password``,
``exec`` credential plugins (token), relative paths against the kubeconfig's directory, and ``HTTPS_PROXY``/
``HTTP_PROXY``/``NO_PROXY`` as httpx honours them. Secrets never appear in messages.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, urlsplit

DEFAULT_DATA_DIR = Path.home() / ".kubestash"
"""Where ``kubestash up`` keeps its data and writes its kubeconfig: ``kubestash.cli.up``'s, which imports the
engines (a test keeps the two equal)."""
DEFAULT_NAMESPACE = "default"
TIMEOUT_S = 10.0
USER_AGENT = "kubestash-cli"


class ConfigError(Exception):
    """The kubeconfig cannot be used (the message names no secret)."""


class Unreachable(Exception):
    """No HTTP answer: connection refused, TLS failure, timeout."""


class ApiFailure(Exception):
    """The API server answered with an error status; ``message`` is its Status message."""

    def __init__(self, code: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason


# ------------------------------------------------------------------ kubeconfig
def resolve_kubeconfig(explicit: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """``--kubeconfig``, else the first existing file of $KUBECONFIG, else ~/.kube/config, else ``kubestash up``'s."""
    if explicit is not None:
        return explicit
    env = os.environ if env is None else env
    for entry in (env.get("KUBECONFIG") or "").split(os.pathsep):
        if entry and Path(entry).expanduser().is_file():
            return Path(entry).expanduser()
    home = Path.home() / ".kube" / "config"
    if home.is_file():
        return home
    embedded = DEFAULT_DATA_DIR / "kubeconfig"
    if embedded.is_file():
        return embedded
    raise ConfigError(
        f"no kubeconfig: pass --kubeconfig, set KUBECONFIG, create {home}, or start `kubestash up` (writes {embedded})"
    )


class ClusterAccess(NamedTuple):
    """One context of a kubeconfig, resolved: where the server is, how to trust it, who we are.

    A named tuple, not a dataclass: ``dataclasses`` imports ``inspect``, 9 ms of start-up here.
    """

    server: str
    namespace: str
    context: str
    ca_file: str | None = None
    ca_data: str | None = None
    """PEM text."""
    insecure: bool = False
    client_cert: tuple[str, str] | None = None
    """(certificate file, key file)."""
    client_cert_data: tuple[bytes, bytes] | None = None
    token: str | None = None
    token_file: str | None = None
    basic: tuple[str, str] | None = None
    exec_plugin: Mapping[str, Any] | None = None

    def __repr__(self) -> str:  # never the key, the token or the password
        return f"ClusterAccess(server={self.server!r}, context={self.context!r}, namespace={self.namespace!r})"


def load_kubeconfig(path: Path, context: str | None = None) -> ClusterAccess:
    """The ``context`` (else current) of the kubeconfig at ``path``; ConfigError names what is wrong."""
    import yaml  # here, not at module level: the JSON kubeconfigs need none of it

    try:
        text = path.expanduser().read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        conf = json.loads(text) if text.lstrip().startswith("{") else yaml.load(text, Loader=_yaml_loader(yaml))
    except Exception as exc:  # PyYAML's errors: the position, not the content
        raise ConfigError(f"not YAML: {getattr(exc, 'problem', None) or type(exc).__name__}") from exc
    return select_context(conf, path.expanduser(), context)


def _yaml_loader(yaml: Any) -> Any:
    """libyaml's safe loader when PyYAML was built with it (several times faster), else the pure one."""
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _named(conf: Mapping[str, Any], section: str, key: str) -> dict[str, Mapping[str, Any]]:
    entries = conf.get(section) or []
    if not isinstance(entries, list):
        raise ConfigError(f"{section} is not a list")
    out: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        if isinstance(entry, Mapping) and "name" in entry:
            out[str(entry["name"])] = entry.get(key) or {}
    return out


def select_context(conf: Any, path: Path, context: str | None) -> ClusterAccess:
    if not isinstance(conf, Mapping):
        raise ConfigError("not a kubeconfig (no mapping)")
    name = context if context is not None else conf.get("current-context")
    if not name:
        raise ConfigError("No current context set and no default provided")
    contexts = _named(conf, "contexts", "context")
    if name not in contexts:
        raise ConfigError(f"Context '{name}' not found")
    ctx = contexts[str(name)]
    clusters = _named(conf, "clusters", "cluster")
    if str(ctx.get("cluster")) not in clusters:
        raise ConfigError(f"cluster '{ctx.get('cluster')}' of context '{name}' not found")
    cluster = clusters[str(ctx.get("cluster"))]
    user: Mapping[str, Any] = {}
    if ctx.get("user"):
        users = _named(conf, "users", "user")
        if str(ctx["user"]) not in users:
            raise ConfigError(f"user '{ctx['user']}' of context '{name}' not found")
        user = users[str(ctx["user"])]

    def relative(value: Any) -> str:
        p = Path(str(value)).expanduser()
        return str(p if p.is_absolute() else path.parent / p)

    def decoded(key: str) -> bytes:
        try:
            return base64.b64decode(str(user.get(key) or cluster.get(key)), validate=False)
        except ValueError as exc:
            raise ConfigError(f"{key} is not base64") from exc

    client_cert = client_cert_data = None
    if user.get("client-certificate-data") or user.get("client-certificate"):
        if user.get("client-certificate-data") and user.get("client-key-data"):
            client_cert_data = (decoded("client-certificate-data"), decoded("client-key-data"))
        elif user.get("client-certificate") and user.get("client-key"):
            client_cert = (relative(user["client-certificate"]), relative(user["client-key"]))
        else:
            raise ConfigError("a client certificate needs a client key (both files, or both -data)")
    if user.get("auth-provider"):
        raise ConfigError("auth-provider not supported")
    username, password = user.get("username"), user.get("password")
    return ClusterAccess(
        server=str(cluster.get("server") or "http://localhost:8080"),
        namespace=str(ctx.get("namespace") or DEFAULT_NAMESPACE),
        context=str(name),
        ca_file=relative(cluster["certificate-authority"]) if cluster.get("certificate-authority") else None,
        ca_data=decoded("certificate-authority-data").decode(errors="replace")
        if cluster.get("certificate-authority-data")
        else None,
        insecure=cluster.get("insecure-skip-tls-verify") is True,
        client_cert=client_cert,
        client_cert_data=client_cert_data,
        token=str(user["token"]) if user.get("token") else None,
        token_file=relative(user["tokenFile"]) if user.get("tokenFile") else None,
        basic=(str(username), str(password)) if username and password else None,
        exec_plugin=user.get("exec") or None,
    )


# ------------------------------------------------------------------ TLS and credentials
def ssl_context(access: ClusterAccess) -> ssl.SSLContext:
    """Verify the server against the kubeconfig's CA (else the system's); present the client certificate."""
    if access.ca_file or access.ca_data:
        try:
            ctx = ssl.create_default_context(cafile=access.ca_file, cadata=access.ca_data)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"cannot load the certificate authority: {getattr(exc, 'reason', None) or exc}") from exc
    else:
        ctx = ssl.create_default_context()
        if access.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    try:
        if access.client_cert:
            ctx.load_cert_chain(*access.client_cert)
        elif access.client_cert_data:
            _load_cert_data(ctx, *access.client_cert_data)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the client certificate: {getattr(exc, 'reason', None) or exc}") from exc
    return ctx


def _load_cert_data(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """``load_cert_chain`` reads files only: a private directory holds them for the call, then nothing remains."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kubestash-") as tmp:
        cert_file, key_file = Path(tmp) / "client.crt", Path(tmp) / "client.key"
        for target, data in ((cert_file, cert), (key_file, key)):
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(str(cert_file), str(key_file))


def authorization(access: ClusterAccess) -> str | None:
    """The Authorization header's value (token, token file, basic or exec plugin), or None."""
    if access.token_file:
        try:
            return f"Bearer {Path(access.token_file).read_text().strip()}"
        except OSError as exc:
            raise ConfigError(f"Token file {access.token_file} not readable: {exc.strerror or exc}") from exc
    if access.token:
        return f"Bearer {access.token}"
    if access.exec_plugin:
        return f"Bearer {_exec_token(access.exec_plugin)}"
    if access.basic:
        return "Basic " + base64.b64encode(":".join(access.basic).encode()).decode()
    return None


def _exec_token(plugin: Mapping[str, Any]) -> str:
    import subprocess

    api_version = plugin.get("apiVersion")
    if api_version not in ("client.authentication.k8s.io/v1alpha1", "client.authentication.k8s.io/v1beta1"):
        raise ConfigError(f"auth exec api version {api_version} not implemented")
    env = dict(os.environ)
    env.update((str(v.get("name")), str(v.get("value"))) for v in plugin.get("env") or [])
    command = [str(plugin.get("command")), *(str(a) for a in plugin.get("args") or [])]
    try:
        proc = subprocess.run(command, env=env, capture_output=True, check=False)
    except OSError as exc:
        raise ConfigError(f"Exec {command[0]} failed: {exc.strerror or exc}") from exc
    if proc.returncode != 0:
        raise ConfigError(f"Exec {command[0]} returned {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    try:
        return str(json.loads(proc.stdout)["status"]["token"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"Exec {command[0]} printed no status.token") from exc


def proxy_for(scheme: str, host: str, env: Mapping[str, str] | None = None) -> str | None:
    """The proxy URL httpx would use for ``scheme://host`` (``*_PROXY`` and ``NO_PROXY`` from the environment)."""
    env = os.environ if env is None else env

    def var(name: str) -> str:
        return env.get(name) or env.get(name.lower()) or ""

    proxy = var(f"{scheme.upper()}_PROXY") or var("ALL_PROXY")
    if not proxy:
        return None
    for entry in var("NO_PROXY").split(","):
        pattern = entry.strip()
        if pattern == "*":
            return None
        pattern = pattern.removeprefix("*").lstrip(".")
        if pattern and (host == pattern or host.endswith("." + pattern)):
            return None
    return proxy if "://" in proxy else f"http://{proxy}"


# ------------------------------------------------------------------ HTTP
class KubeApi:
    """JSON requests to one API server over one kept-alive connection (reopened when the server closed it)."""

    def __init__(self, access: ClusterAccess, *, timeout: float = TIMEOUT_S) -> None:
        self.access = access
        self.timeout = timeout
        url = urlsplit(access.server)
        if url.scheme not in ("https", "http") or not url.hostname:
            raise ConfigError(f"server {access.server!r} is no http(s) URL")
        self.scheme = url.scheme
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.prefix = url.path.rstrip("/")
        self._ssl = ssl_context(access) if url.scheme == "https" else None
        self._auth = authorization(access)
        self._proxy = proxy_for(url.scheme, self.host)
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> KubeApi:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            host, port = self.host, self.port
            if self._proxy:
                proxy = urlsplit(self._proxy)
                host, port = proxy.hostname or "", proxy.port or 80
            if self._ssl is not None:
                self._conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ssl)
                if self._proxy:
                    self._conn.set_tunnel(self.host, self.port, headers=_proxy_auth(self._proxy))
            else:
                self._conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        return self._conn

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON answer; ApiFailure for an error status, Unreachable without an answer."""
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self._auth:
            headers["Authorization"] = self._auth
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        target = self.prefix + path
        if self._proxy and self._ssl is None:  # plain HTTP through a proxy: absolute URLs
            host = f"[{self.host}]" if ":" in self.host else self.host
            target = f"http://{host}:{self.port}{target}"
            headers.update(_proxy_auth(self._proxy))
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request(method, target, body=data, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                # A kept-alive connection the server closed meanwhile: once more on a new one (reads only).
                if reused and attempt == 1 and method == "GET" and not isinstance(exc, TimeoutError):
                    continue
                raise Unreachable(_reason(exc)) from exc
            if response.will_close:
                self.close()
            return _decode(response.status, payload)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)


def _proxy_auth(proxy: str) -> dict[str, str]:
    url = urlsplit(proxy)
    if not url.username:
        return {}
    credentials = f"{unquote(url.username)}:{unquote(url.password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(credentials).decode()}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _decode(status: int, payload: bytes) -> Any:
    try:
        decoded = json.loads(payload) if payload else None
    except ValueError:
        decoded = None
    if status < 400:
        if decoded is None and payload:
            raise ApiFailure(status, f"HTTP {status}: the answer is not JSON")
        return decoded
    if isinstance(decoded, Mapping) and decoded.get("message"):
        raise ApiFailure(status, str(decoded["message"]), str(decoded.get("reason") or ""))
    text = payload.decode(errors="replace").strip()[:200]
    raise ApiFailure(status, f"HTTP {status}: {text}" if text else f"HTTP {status}")


def object_path(group: str, plural: str, namespace: str, name: str | None = None, *, version: str = "v1alpha1") -> str:
    path = f"/apis/{group}/{version}/namespaces/{quote(namespace, safe='')}/{plural}"
    return f"{path}/{quote(name, safe='')}" if name else path
