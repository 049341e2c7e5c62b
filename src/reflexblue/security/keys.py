"""Signing keys: creation, storage, rotation and the in-memory key set.

Keys live in the database, so every instance signs and verifies with the same set, and each
database has keys of its own: a token of one deployment is never valid on another. Private keys
are stored as PKCS#8 PEM, encrypted with ``REFLEXBLUE_SECRET_KEY`` when it is set.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm
from sqlalchemy import select
from sqlalchemy.orm import Session

from reflexblue.domain.errors import NotFoundError, ReflexBlueError, ValidationError
from reflexblue.storage.models import SigningKey, utcnow
from reflexblue.storage.repository import audit, bump_access_epoch, get_environment

ACTIVE = "active"
PREVIOUS = "previous"
RETIRED = "retired"

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class SigningKeyUnavailable(ReflexBlueError):
    """No active signing key can be used with this process's settings, so no token can be issued."""


def _generate(algorithm: str) -> PrivateKey:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValidationError(f"unsupported token algorithm {algorithm!r}: use EdDSA or ES256")


def _public_jwk(algorithm: str, public_key: PublicKey, kid: str) -> dict[str, Any]:
    codec = OKPAlgorithm if algorithm == "EdDSA" else ECAlgorithm
    jwk = json.loads(codec.to_jwk(public_key))  # type: ignore[arg-type]
    jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return jwk


def _encryption(secret: str) -> serialization.KeySerializationEncryption:
    if secret:
        return serialization.BestAvailableEncryption(secret.encode())
    return serialization.NoEncryption()


def create_key(session: Session, algorithm: str, *, secret: str, actor: str) -> SigningKey:
    """Create a new active signing key; the previous active key keeps verifying until its tokens expire."""
    private_key = _generate(algorithm)
    kid = secrets.token_urlsafe(12)
    now = utcnow()
    for key in session.scalars(select(SigningKey).where(SigningKey.state == ACTIVE).with_for_update()):
        key.state = PREVIOUS
        key.deactivated_at = now
    row = SigningKey(
        kid=kid,
        algorithm=algorithm,
        private_key=private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _encryption(secret)
        ),
        public_jwk=_public_jwk(algorithm, private_key.public_key(), kid),
        state=ACTIVE,
        created_at=now,
    )
    session.add(row)
    session.flush()
    audit(session, "key.created", actor, detail={"kid": kid, "algorithm": algorithm})
    bump_access_epoch(session)
    return row


def ensure_active_key(session: Session, algorithm: str, *, secret: str, actor: str) -> SigningKey:
    """Return the active key for ``algorithm``, creating one when there is none (first start)."""
    get_environment(session, for_update=True)  # serialises concurrent first starts
    active = session.scalars(select(SigningKey).where(SigningKey.state == ACTIVE)).first()
    if active is not None and active.algorithm == algorithm:
        return active
    return create_key(session, algorithm, secret=secret, actor=actor)


def list_keys(session: Session) -> list[SigningKey]:
    return list(session.scalars(select(SigningKey).order_by(SigningKey.created_at)))


def retire_key(session: Session, kid: str, *, actor: str) -> None:
    """Stop accepting a key at once (e.g. when it is compromised); its tokens get 401 from now on."""
    key = session.get(SigningKey, kid)
    if key is None:
        raise NotFoundError("signing key", kid)
    if key.state == RETIRED:
        return
    if key.state == ACTIVE:
        raise ValidationError(
            f"key {kid!r} is the active signing key: run `reflexblue keys rotate` first, then retire it"
        )
    key.state = RETIRED
    key.deactivated_at = key.deactivated_at or utcnow()
    audit(session, "key.retired", actor, detail={"kid": kid})
    bump_access_epoch(session)


@dataclass(frozen=True, slots=True)
class LoadedKey:
    kid: str
    algorithm: str
    state: str
    public_key: PublicKey
    private_key: PrivateKey | None
    public_jwk: dict[str, Any]
    deactivated_at: dt.datetime | None


class KeySet:
    """The keys this process signs and verifies with, reloaded from the database on demand."""

    def __init__(self, algorithm: str, secret: str, token_lifetime: int, leeway: int) -> None:
        self.algorithm = algorithm
        self._secret = secret
        self._lifetime = dt.timedelta(seconds=token_lifetime + leeway)
        self._keys: dict[str, LoadedKey] = {}
        self._active: LoadedKey | None = None
        self._lock = threading.Lock()
        #: Why no active key can sign, or None when one can; the operator's fix is in the text.
        self.problem: str | None = None

    def load(self, session: Session) -> None:
        rows = session.scalars(select(SigningKey).where(SigningKey.state != RETIRED)).all()
        keys: dict[str, LoadedKey] = {}
        active: LoadedKey | None = None
        problem: str | None = None
        for row in rows:
            private_key = None
            if row.state == ACTIVE:
                private_key, problem = self._open(row)
            public_key: PublicKey
            if row.algorithm == "EdDSA":
                public_key = OKPAlgorithm.from_jwk(row.public_jwk)  # type: ignore[assignment]
            else:
                public_key = ECAlgorithm.from_jwk(row.public_jwk)  # type: ignore[assignment]
            loaded = LoadedKey(row.kid, row.algorithm, row.state, public_key, private_key,
                               dict(row.public_jwk), row.deactivated_at)
            keys[row.kid] = loaded
            if row.state == ACTIVE and row.algorithm == self.algorithm and private_key is not None:
                active = loaded
        if active is None and problem is None:
            problem = (
                f"no active {self.algorithm} signing key: another process changed the keys or the algorithm; "
                f"run `reflexblue keys rotate` with REFLEXBLUE_TOKEN_ALGORITHM={self.algorithm}, or give every "
                "server the same REFLEXBLUE_TOKEN_ALGORITHM"
            )
        with self._lock:
            self._keys = keys
            self._active = active
            self.problem = problem

    def _open(self, row: SigningKey) -> tuple[PrivateKey | None, str | None]:
        """Open the private key of ``row``; returns (key, None), or (None, why it failed)."""
        try:
            key = serialization.load_pem_private_key(row.private_key, password=None)
        except TypeError:  # encrypted: needs the secret
            if not self._secret:
                return None, (
                    f"signing key {row.kid!r} is encrypted, but REFLEXBLUE_SECRET_KEY is not set: "
                    "set the secret it was stored with"
                )
            try:
                key = serialization.load_pem_private_key(row.private_key, password=self._secret.encode())
            except (TypeError, ValueError):
                return None, (
                    f"cannot open signing key {row.kid!r}: REFLEXBLUE_SECRET_KEY differs from the secret it was "
                    "stored with; set the original secret on every server and command"
                )
        return key, None  # type: ignore[return-value]

    @property
    def active(self) -> LoadedKey:
        """The key that signs new tokens; raises SigningKeyUnavailable when there is none."""
        active = self._active
        if active is None or active.private_key is None:
            raise SigningKeyUnavailable(self.problem or "no active signing key loaded")
        return active

    def verification_key(self, kid: str) -> LoadedKey | None:
        """Return the key named ``kid`` if it may verify tokens signed with the configured algorithm."""
        key = self._keys.get(kid)
        if key is None or key.algorithm != self.algorithm:
            return None
        return key

    def jwks(self, now: dt.datetime) -> dict[str, Any]:
        """Return the public keys whose tokens can still be valid, as a JWK Set."""
        published = []
        for key in self._keys.values():
            if key.state == PREVIOUS and key.deactivated_at and key.deactivated_at + self._lifetime < now:
                continue
            published.append(key.public_jwk)
        return {"keys": published}
