"""Relay keys at rest: Fernet encryption under one master key, and the masked hint admins see.

The master key comes from ``NB_SECRET_KEY`` (``Settings.secret_key``) or, when that is unset,
from ``<data_dir>/secret.key``, generated on first start with owner-only permissions (0600).
``NB_SECRET_KEY`` may be a Fernet key (``Fernet.generate_key()``) or any passphrase of 16+
characters (stretched with scrypt). Several comma-separated keys rotate: the first encrypts,
all of them decrypt.

Losing the master key loses the stored relay keys (admins re-enter them); it exposes nothing.
No key material appears in a ``repr``, a log record or an exception message here.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

log = logging.getLogger(__name__)

KEY_FILE = "secret.key"
# A fixed salt is fine here: it only stops precomputed tables across installations; the
# passphrase itself is the secret, and operators who want more give a real Fernet key.
_SALT = b"nano-banana-bot/relay-keys/v1"
_MIN_PASSPHRASE = 16


class SecretError(Exception):
    """The master key is unusable, or a stored key cannot be decrypted with it."""

    key = "admin.secret.undecryptable"


def _is_fernet_key(raw: bytes) -> bool:
    try:
        Fernet(raw)
    except ValueError:
        return False
    return True


def check_master_key(text: str) -> None:
    """Raise :class:`SecretError` (one line, no key material) unless every comma-separated
    part of ``NB_SECRET_KEY`` is usable. Cheap: no key is derived, so settings can check it
    before anything is opened."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise SecretError("NB_SECRET_KEY holds no key")
    for index, part in enumerate(parts, 1):
        if not _is_fernet_key(part.encode()) and len(part.encode()) < _MIN_PASSPHRASE:
            which = f" (key {index} of {len(parts)})" if len(parts) > 1 else ""
            raise SecretError(f"NB_SECRET_KEY{which} must be a Fernet key or a passphrase of at least {_MIN_PASSPHRASE} characters")


def _fernet_from_text(text: str) -> Fernet:
    raw = text.strip().encode()
    if _is_fernet_key(raw):
        return Fernet(raw)
    check_master_key(text)
    derived = Scrypt(salt=_SALT, length=32, n=2**14, r=8, p=1).derive(raw)
    return Fernet(base64.urlsafe_b64encode(derived))


def _load_or_create_key_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once cannot both write a key; 0o600 from the
        # start, so the key is never readable by others even for a moment (umask only narrows).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s was readable by other users (mode %o); restricting it to the owner", path, mode)
            os.chmod(path, 0o600)
        key = path.read_bytes().strip()
        if not key:
            raise SecretError(f"{path} is empty; delete it to generate a new one (stored relay keys are then lost)") from None
        return key
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    log.info("generated a new master key in %s", path)
    return key


class Keyring:
    """Encrypts and decrypts relay keys. Build it with :func:`load_keyring`."""

    def __init__(self, fernets: list[Fernet]) -> None:
        if not fernets:
            raise SecretError("no master key")
        self._fernet = MultiFernet(fernets)

    def __repr__(self) -> str:
        return "Keyring(<hidden>)"

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(token)).decode("utf-8")
        except (InvalidToken, TypeError, ValueError):
            raise SecretError(
                "a stored relay key cannot be decrypted: the master key (NB_SECRET_KEY or data/secret.key) "
                "changed since it was saved; re-enter the relay key"
            ) from None


def load_keyring(secret_key: str | None, data_dir: Path) -> Keyring:
    """The keyring from ``NB_SECRET_KEY`` if set, else from (or into) ``data_dir/secret.key``."""
    if secret_key and secret_key.strip():
        return Keyring([_fernet_from_text(part) for part in secret_key.split(",") if part.strip()])
    path = Path(data_dir) / KEY_FILE
    try:
        return Keyring([Fernet(_load_or_create_key_file(path))])
    except ValueError:
        raise SecretError(f"{path} does not hold a valid key; restore it, or delete it to generate a new one") from None


def mask(key: str) -> str:
    """A hint to tell keys apart without revealing them: ``sk-…abcd``.

    Only well-known, non-secret prefixes are kept; the last four characters are shown only
    when the key is long enough that four characters give nothing useful away.
    """
    key = key.strip()
    prefix = next((p for p in ("sk-", "AIza") if key.startswith(p)), "")
    tail = key[-4:] if len(key) - len(prefix) >= 16 else ""
    return f"{prefix}…{tail}"
