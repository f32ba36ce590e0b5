import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from network.identity import Identity, IdentityError, load_key_file, peer_id_of, write_key_file


def test_a_written_key_is_0600_and_loads_back_to_the_same_identity(tmp_path) -> None:
    path = tmp_path / "keys" / "node.key"
    made = write_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_key_file(path)
    assert loaded == made
    assert loaded.peer_id == peer_id_of(made.public_key)
    assert b"BEGIN PRIVATE KEY" in path.read_bytes()


def test_an_existing_key_is_never_replaced_unless_asked(tmp_path) -> None:
    path = tmp_path / "node.key"
    first = write_key_file(path)
    with pytest.raises(IdentityError, match="already exists"):
        write_key_file(path)
    assert load_key_file(path) == first
    second = write_key_file(path, overwrite=True)
    assert load_key_file(path) == second != first


def test_bad_key_files_are_refused_with_the_reason(tmp_path) -> None:
    with pytest.raises(IdentityError, match="no key file.*icn-node keygen"):
        load_key_file(tmp_path / "missing.key")
    readable = tmp_path / "open.key"
    write_key_file(readable)
    os.chmod(readable, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_key_file(readable)
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"hello")
    os.chmod(garbage, 0o600)
    with pytest.raises(IdentityError, match="not an unencrypted PEM"):
        load_key_file(garbage)
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(ec_key, 0o600)
    with pytest.raises(IdentityError, match="needs an Ed25519 key"):
        load_key_file(ec_key)
    with pytest.raises(IdentityError, match="not a regular file"):
        load_key_file(tmp_path)


def test_libp2p_and_consensus_keys_are_one_key() -> None:
    ident = Identity.generate()
    assert ident.key_pair.public_key.to_bytes() == ident.signer.public_key
    assert ident.key_pair.private_key.sign(b"x") == ident.signer.sign(b"x")
