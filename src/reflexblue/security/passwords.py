"""argon2id password hashing through argon2-cffi.

Verification of an unknown username runs against a dummy hash made with the same parameters,
so an unknown user costs the same time as a wrong password.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from reflexblue.domain.errors import ValidationError
from reflexblue.settings import Settings

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of a password check; ``new_hash`` is set when the stored hash should be upgraded."""

    ok: bool
    new_hash: str | None = None


class Passwords:
    """Hashes and verifies passwords with the configured argon2id parameters."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )

    @cached_property
    def _dummy_hash(self) -> str:
        """A hash with the current parameters, verified in place of an unknown user's hash."""
        return self._hasher.hash("reflexblue-dummy-password-for-unknown-users")

    def warm_up(self) -> None:
        """Compute the dummy hash now, so the first login with an unknown username costs no more than others."""
        _ = self._dummy_hash

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> Verification:
        """Check ``password`` against ``stored_hash``; ``None`` means "unknown user" and always fails.

        The work done is the same in both cases: the dummy hash has the current parameters.
        """
        target = stored_hash if stored_hash is not None else self._dummy_hash
        try:
            self._hasher.verify(target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return Verification(ok=False)
        if stored_hash is None:
            return Verification(ok=False)
        if self._hasher.check_needs_rehash(stored_hash):
            return Verification(ok=True, new_hash=self._hasher.hash(password))
        return Verification(ok=True)


def check_password_policy(password: object) -> str:
    """Return ``password`` unchanged if it may be set, or raise ValidationError saying why not.

    The password is never trimmed, normalised or truncated, and the message never contains it.
    """
    if not isinstance(password, str):
        raise ValidationError("invalid password: it must be a string")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationError(f"password too long: use at most {MAX_PASSWORD_LENGTH} characters")
    return password


def check_password_hash(password_hash: object) -> str:
    """Accept a pre-computed argon2id PHC string (from a provisioning file)."""
    if not isinstance(password_hash, str) or not password_hash.startswith("$argon2id$"):
        raise ValidationError("invalid password_hash: give an argon2id PHC string starting with '$argon2id$'")
    try:
        from argon2 import extract_parameters

        extract_parameters(password_hash)
    except (InvalidHashError, ValueError):
        raise ValidationError("invalid password_hash: not a well-formed argon2id PHC string") from None
    return password_hash
