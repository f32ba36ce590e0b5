"""The node's one Ed25519 key: its libp2p peer identity and its consensus signing key.

One key for both means a validator's public key names its peer id, so a node
can tell which connected peer is which director without a second registry.
The file is PKCS#8 PEM (readable by `openssl pkey`), written 0600 and refused
when group or others can read it, as ssh does with its keys.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from consensus.crypto import Signer


class IdentityError(ValueError):
    """A key file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Identity:
    seed: bytes  # the 32-byte Ed25519 private key

    @property
    def signer(self) -> Signer:
        return Signer.from_seed(self.seed)

    @property
    def public_key(self) -> bytes:
        return self.signer.public_key

    @property
    def key_pair(self) -> KeyPair:
        return create_new_key_pair(self.seed)

    @property
    def peer_id(self) -> ID:
        return peer_id_of(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Signer.generate().private_bytes())


def peer_id_of(public_key: bytes) -> ID:
    """The libp2p peer id of a validator's raw 32-byte Ed25519 public key."""
    from libp2p.crypto.ed25519 import Ed25519PublicKey

    return ID.from_pubkey(Ed25519PublicKey.from_bytes(public_key))


def write_key_file(
    path: str | Path, identity: Identity | None = None, *, overwrite: bool = False
) -> Identity:
    """Create a key file with mode 0600; never replaces an existing key unless asked."""
    identity = identity or Identity.generate()
    path = Path(path)
    if path.exists() and not overwrite:
        raise IdentityError(f"{path}: a key file already exists; refusing to replace a node's identity")
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.from_private_bytes(identity.seed).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)  # O_CREAT's mode is masked by umask; make it exact
    os.replace(tmp, path)
    return identity


def load_key_file(path: str | Path) -> Identity:
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IdentityError(f"{path}: no key file; create one with `icn-node keygen --out {path}`") from None
    if not stat.S_ISREG(st.st_mode):
        raise IdentityError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise IdentityError(
            f"{path}: permissions {stat.filemode(st.st_mode)} let others read the node's private key; "
            f"run `chmod 600 {path}`"
        )
    data = path.read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{path}: holds a {type(key).__name__}, the node needs an Ed25519 key")
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return Identity(seed)
