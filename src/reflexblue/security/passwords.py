"""argon2id password hashing through argon2-cffi.

Verification of an unknown username runs against a dummy hash made with the same parameters,
so an unknown user costs the same time as a wrong password.
"""

from __future__ import annotations

import functools
import itertools
import time
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from importlib import resources

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from reflexblue.domain.errors import ValidationError
from reflexblue.domain.usernames import normalise_username
from reflexblue.settings import Settings

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
#: Package data: one common password a line, lowercased; lines starting with "#" are comments.
COMMON_PASSWORDS_FILE = "common-passwords.txt"
#: A password may not contain a username of at least this many characters. Shorter usernames
#: (such as "api") occur by chance in strong passwords, so they are only compared for equality.
MIN_USERNAME_LENGTH_TO_CONTAIN = 4
#: A password that repeats a unit of at most this many characters ("abababababab") is rejected.
MAX_REPEATED_UNIT = 4


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

    #: Median time of one verification with the current parameters, measured by warm_up().
    _reference_seconds: float = 0.0

    @cached_property
    def _dummy_hash(self) -> str:
        """A hash with the current parameters, verified in place of an unknown user's hash."""
        return self._hasher.hash("reflexblue-dummy-password-for-unknown-users")

    def warm_up(self) -> None:
        """Compute the dummy hash and time its verification, so unknown and outdated users cost the same."""
        samples = []
        for _ in range(3):
            started = time.perf_counter()
            self.verify(None, "reflexblue-warm-up-password")
            samples.append(time.perf_counter() - started)
        self._reference_seconds = sorted(samples)[1]

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> Verification:
        """Check ``password`` against ``stored_hash``; ``None`` means "unknown user" and always fails.

        The work done is the same in both cases: the dummy hash has the current parameters.
        """
        target = stored_hash if stored_hash is not None else self._dummy_hash
        started = time.perf_counter()
        try:
            outdated = stored_hash is not None and self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            outdated = True  # a damaged hash fails below; pad it like an outdated one
        try:
            self._hasher.verify(target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            if outdated:
                self._pad(started)
            return Verification(ok=False)
        if stored_hash is None:
            return Verification(ok=False)
        if self._hasher.check_needs_rehash(stored_hash):
            return Verification(ok=True, new_hash=self._hasher.hash(password))
        return Verification(ok=True)


    def _pad(self, started: float) -> None:
        """Make a failed check of a hash with cheaper, older parameters last as long as one with current ones.

        Without this, users whose hash predates a parameter change would fail faster than
        unknown usernames, which are checked against a current dummy hash. A hash with more
        expensive parameters cannot be sped up; its user is re-hashed at the next login.
        """
        remaining = self._reference_seconds - (time.perf_counter() - started)
        if remaining > 0:
            time.sleep(remaining)


def _comparison_key(text: str) -> str:
    """Return the form in which the policy compares passwords: NFKC-normalised and case-folded."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


@functools.cache
def common_passwords() -> frozenset[str]:
    """Return the common passwords shipped with the package, in comparison form."""
    text = resources.files(__package__).joinpath(COMMON_PASSWORDS_FILE).read_text(encoding="utf-8")
    return frozenset(_comparison_key(line) for line in text.splitlines() if line and not line.startswith("#"))


def _repeats_short_unit(key: str) -> bool:
    """Return whether ``key`` is one unit of at most MAX_REPEATED_UNIT characters, repeated."""
    for size in range(1, MAX_REPEATED_UNIT + 1):
        unit = key[:size]
        if (unit * (len(key) // size + 1))[: len(key)] == key:
            return True
    return False


def _step(first: str, second: str) -> int:
    """Return +1 or -1 when ``second`` follows or precedes ``first``, else 0; digits wrap (9 -> 0)."""
    if first in "0123456789" and second in "0123456789":
        difference = (int(second) - int(first)) % 10
        return {1: 1, 9: -1}.get(difference, 0)
    difference = ord(second) - ord(first)
    return difference if difference in (1, -1) else 0


def _is_sequence(key: str) -> bool:
    """Return whether ``key`` is one run of consecutive characters, such as "abcdefghijkl" or "098765432109"."""
    steps = {_step(first, second) for first, second in itertools.pairwise(key)}
    return steps in ({1}, {-1})


def check_password_policy(password: object, *, username: str | None = None) -> str:
    """Return ``password`` unchanged if it may be set, or raise ValidationError saying why not.

    Beyond the length limits, the password must not be on the shipped list of common passwords,
    be a short unit repeated or a run of consecutive characters. When ``username`` is given, the
    password must not equal it, nor contain it if the username has MIN_USERNAME_LENGTH_TO_CONTAIN
    or more characters. These comparisons ignore case and use the NFKC form. The password is never
    trimmed, normalised or truncated, and the message never contains it.
    """
    if not isinstance(password, str):
        raise ValidationError("invalid password: it must be a string")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("invalid password: it is not valid Unicode text (lone surrogate)") from None
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(f"password has fewer than {MIN_PASSWORD_LENGTH} characters: use a longer one")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationError(f"password too long: use at most {MAX_PASSWORD_LENGTH} characters")
    key = _comparison_key(password)
    if key in common_passwords():
        raise ValidationError(
            "password too common: it is on the list of common passwords that attackers try first; "
            "choose another, such as several random words"
        )
    if _repeats_short_unit(key) or _is_sequence(key):
        raise ValidationError(
            "password too simple: it repeats a few characters or is a run such as abcdef or 987654; choose another"
        )
    if username is not None:
        username_key = normalise_username(username)
        if username_key and (
            key.strip() == username_key
            or (len(username_key) >= MIN_USERNAME_LENGTH_TO_CONTAIN and username_key in key)
        ):
            raise ValidationError("invalid password: it contains the username; choose one that does not")
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
