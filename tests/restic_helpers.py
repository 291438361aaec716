"""restic repositories for tests: a cheap key (fast tests) and a tree with everything a restore must reproduce."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

PASSWORD = "correct-horse-battery-staple-42"


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes, bytes]:
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 << 20, dklen=64)
    return key[:32], key[32:48], key[48:]  # AES-256 key, Poly1305-AES k, r


def _mac(ciphertext: bytes, nonce: bytes, k: bytes, r: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(k), modes.ECB()).encryptor()
    return Poly1305.generate_tag(r + encryptor.update(nonce) + encryptor.finalize(), ciphertext)


def cheapen_key(repo: Path, password: str) -> None:
    """Re-encrypt the repository's only key with scrypt N=1024 instead of restic's calibrated ~0.3 s KDF.

    Every restic command derives the key first; this keeps the module fast. restic's key format: scrypt
    gives 64 bytes (AES key, MAC k, MAC r); ``data`` is nonce || AES-CTR ciphertext || Poly1305-AES tag.
    """
    (path,) = (repo / "keys").iterdir()
    doc = json.loads(path.read_bytes())
    aes, k, r = _derive(password, base64.b64decode(doc["salt"]), doc["N"], doc["r"], doc["p"])
    data = base64.b64decode(doc["data"])
    nonce, ciphertext, tag = data[:16], data[16:-16], data[-16:]
    assert _mac(ciphertext, nonce, k, r) == tag
    decryptor = Cipher(algorithms.AES(aes), modes.CTR(nonce)).decryptor()
    master = decryptor.update(ciphertext) + decryptor.finalize()
    salt, nonce = os.urandom(64), os.urandom(16)
    aes, k, r = _derive(password, salt, 1024, 8, 1)
    encryptor = Cipher(algorithms.AES(aes), modes.CTR(nonce)).encryptor()
    ciphertext = encryptor.update(master) + encryptor.finalize()
    data = nonce + ciphertext + _mac(ciphertext, nonce, k, r)
    doc.update(N=1024, r=8, p=1, salt=base64.b64encode(salt).decode(), data=base64.b64encode(data).decode())
    raw = json.dumps(doc).encode()
    path.unlink()
    (repo / "keys" / hashlib.sha256(raw).hexdigest()).write_bytes(raw)


def make_tree(root: Path) -> Path:
    tree = root / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "empty").mkdir()
    (tree / "a.txt").write_bytes(b"hello\n")
    (tree / "sub" / "b.bin").write_bytes(bytes(range(256)) * 64)
    (tree / "sub" / "deeper" / "c.sh").write_text("#!/bin/sh\necho hi\n")
    (tree / "sub" / "deeper" / "c.sh").chmod(0o750)
    (tree / "secret.key").write_text("k")
    (tree / "secret.key").chmod(0o600)
    (tree / "scratch.tmp").write_text("excluded")
    (tree / "link").symlink_to("sub/b.bin")
    for i, path in enumerate(sorted(p for p in tree.rglob("*") if not p.is_symlink())):
        os.utime(
            path, ns=(1_700_000_000_000_000_000 + i * 1_000_000_123, 1_700_000_000_000_000_000 + i * 1_000_000_123)
        )
    return tree


def describe(tree: Path) -> dict[str, tuple[object, ...]]:
    """Everything a restore must reproduce, per relative path."""
    result: dict[str, tuple[object, ...]] = {}
    for path in sorted(tree.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(tree))
        if path.is_symlink():
            result[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            result[rel] = ("dir", st.st_mode, st.st_mtime_ns)
        else:
            result[rel] = ("file", st.st_mode, st.st_mtime_ns, path.read_bytes())
    return result


def restored_at(target: Path, source: Path) -> Path:
    """restic restores an absolute path below the target with its full path."""
    return target / source.relative_to("/")


def restic_output(repo: Path, *args: str, check_rc: bool = True) -> str:
    """stdout of ``restic -r repo --no-cache args...`` with :data:`PASSWORD` (which must succeed: ``check_rc``)."""
    result = subprocess.run(
        ["restic", "-r", str(repo), "--no-cache", *args],
        env={**os.environ, "RESTIC_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        check=False,
    )
    if check_rc:
        assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout
