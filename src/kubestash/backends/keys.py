"""Object keys under a BackupStorage prefix, and messages about them that are safe to show.

Both backend implementations (obstore, google-cloud-storage) apply the BackupStorage ``prefix`` themselves
rather than leaving it to the client library, so listed paths come back relative to it the same way for
every provider, and every error message is scrubbed of the Secret's values the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

from kubestash.backends.base import BackendError, ErrorReason


class KeySpace:
    def __init__(self, description: str, prefix: str = "", secrets: Iterable[str] = ()) -> None:
        self.description = description
        self.prefix = prefix.strip("/")
        # Longest first, so a secret containing another is scrubbed whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def join(self, rel: str) -> str:
        """The full key of ``rel`` (which may be empty: the prefix itself)."""
        rel = rel.strip("/")
        if not rel:
            return self.prefix
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def key(self, path: str) -> str:
        """The full key of an object path; an empty path is a programming error reported as configuration."""
        if not path.strip("/"):
            raise BackendError("InvalidConfiguration", f"empty object path in {self.description}")
        return self.join(path)

    def relative(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def error(self, reason: ErrorReason, op: str, path: str, detail: str) -> BackendError:
        where = f"{self.description}/{path.strip('/')}" if path.strip("/") else self.description
        return BackendError(reason, self.scrub(f"{op} {where}: {detail}"))

    def scrub(self, text: str) -> str:
        """``text`` with every known secret value replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
