from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot import store
from bot.relays.store import RelayStore
from bot.secrets import KEY_FILE, SecretError, load_keyring, mask

KEY = "sk-live-0123456789abcdefXYZ9"


def test_generated_master_key_is_owner_only_and_reused(data_dir: Path) -> None:
    first = load_keyring(None, data_dir)
    path = data_dir / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = first.encrypt(KEY)
    # A restart reads the same file and can decrypt what the first run stored.
    assert load_keyring(None, data_dir).decrypt(token) == KEY


def test_loose_key_file_permissions_are_tightened(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = data_dir / KEY_FILE
    path.write_bytes(Fernet.generate_key())
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING):
        load_keyring(None, data_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "readable by other users" in caplog.text


def test_env_key_is_used_instead_of_a_file(data_dir: Path) -> None:
    env_key = Fernet.generate_key().decode()
    ring = load_keyring(env_key, data_dir)
    assert not (data_dir / KEY_FILE).exists()
    assert Fernet(env_key.encode()).decrypt(ring.encrypt(KEY)).decode() == KEY


def test_passphrase_and_rotation(data_dir: Path) -> None:
    old = load_keyring("an old passphrase long enough", data_dir)
    token = old.encrypt(KEY)
    rotated = load_keyring("a brand new passphrase here,an old passphrase long enough", data_dir)
    assert rotated.decrypt(token) == KEY  # old key still decrypts
    assert load_keyring("a brand new passphrase here", data_dir).decrypt(rotated.encrypt(KEY)) == KEY
    with pytest.raises(SecretError):
        load_keyring("short", data_dir)


def test_wrong_master_key_is_a_clear_error_without_key_material(data_dir: Path) -> None:
    token = load_keyring(Fernet.generate_key().decode(), data_dir).encrypt(KEY)
    other = Fernet.generate_key().decode()
    with pytest.raises(SecretError) as info:
        load_keyring(other, data_dir).decrypt(token)
    assert "re-enter" in str(info.value)
    assert other not in str(info.value) and KEY not in str(info.value)


def test_ciphertext_and_repr_hide_the_key(data_dir: Path) -> None:
    ring = load_keyring(None, data_dir)
    token = ring.encrypt(KEY)
    assert KEY.encode() not in token and b"0123456789" not in token
    master = (data_dir / KEY_FILE).read_text().strip()
    assert master not in repr(ring) and "Fernet" not in repr(ring)
    assert ring.encrypt(KEY) != token  # fresh IV each time: equal keys don't look equal at rest


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("sk-abcdefghijklmnop1234abcd", "sk-…abcd"),
        ("AIzaSyA1234567890abcdefghijklmnopWXYZ", "AIza…WXYZ"),
        ("plainkey-0123456789-tail", "…tail"),
        ("sk-short9", "sk-…"),  # too short to show any of it
        ("tiny", "…"),
    ],
)
def test_mask(key: str, hint: str) -> None:
    assert mask(key) == hint


async def test_relay_key_is_encrypted_at_rest_and_never_logged(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    db_path = data_dir / "bot.sqlite3"
    db = await store.connect(db_path)
    try:
        relays = RelayStore(db, load_keyring(None, data_dir), allow_private=True)
        with caplog.at_level(logging.DEBUG):
            info = await relays.add(1, name="main", base_url="http://127.0.0.1:9", api_key=KEY, dialect="gemini", auth="query")
            listed = await relays.list(1)
            await relays.health.record_failure(info.id, f"HTTP 401: API key {KEY} not valid", api_key=KEY)
            entries = await relays.entries(1)
        assert info.key_hint == "sk-…XYZ9"
        assert KEY not in repr(listed) and KEY not in repr(entries)
        assert entries[0].config.api_key == KEY  # usable by the relay client
        assert entries[0].config.trusted is False
        # The relay's error text echoed the key: stored redacted.
        assert KEY not in (await relays.list(1))[0].last_error
        assert "sk-…XYZ9" in (await relays.list(1))[0].last_error
    finally:
        await db.close()
    assert KEY not in caplog.text
    for name in os.listdir(data_dir):  # database, WAL and key file alike
        assert KEY.encode() not in (data_dir / name).read_bytes(), name
