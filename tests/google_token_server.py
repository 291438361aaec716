"""A stand-in for Google's OAuth token endpoint (``oauth2.googleapis.com/token``), which cannot run here.

Service-account credentials get their access token by POSTing a JWT signed with the key's private key to the
key's ``token_uri``. This server does what Google does with it, as far as these tests need: it knows the public
keys of the service accounts it was told about, grants a token for a JWT whose RS256 signature verifies, and
answers ``400 invalid_grant`` ("Invalid JWT Signature.") otherwise -- what a revoked or wrong key gets. The
client side (google-auth building and signing the JWT, our error classification) is the real code.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class TokenServer:
    token_uri: str
    accounts: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)
    granted: list[str] = field(default_factory=list)

    def service_account_key(self, email: str, *, registered: bool = True) -> str:
        """A service-account key JSON for ``email``; only a registered key's JWTs are accepted."""
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if registered:
            self.accounts[email] = private.public_key()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return json.dumps(
            {
                "type": "service_account",
                "project_id": "kubestash-test",
                "private_key_id": f"key-{len(self.accounts)}-{email}",
                "private_key": pem,
                "client_email": email,
                "client_id": "1",
                "token_uri": self.token_uri,
            }
        )

    def grant(self, assertion: str) -> bool:
        try:
            header, payload, signature = assertion.split(".")
            claims = json.loads(_b64(payload))
            key = self.accounts[claims["iss"]]
            key.verify(_b64(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, KeyError, InvalidSignature):
            return False
        self.granted.append(claims["iss"])
        return True


@contextmanager
def google_token_server() -> Iterator[TokenServer]:
    state: dict[str, TokenServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            form = urllib.parse.parse_qs(body)
            if state["server"].grant((form.get("assertion") or [""])[0]):
                status, answer = 200, {"access_token": "ya29.test-token", "expires_in": 3600, "token_type": "Bearer"}
            else:
                status, answer = 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["server"] = TokenServer(token_uri=f"http://127.0.0.1:{httpd.server_address[1]}/token")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["server"]
    finally:
        httpd.shutdown()
        httpd.server_close()
