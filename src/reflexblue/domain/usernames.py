"""Username normalisation: the form under which usernames are compared and stored unique."""

from __future__ import annotations

import unicodedata

MAX_USERNAME_LENGTH = 150
# Control, format, surrogate, private-use and unassigned characters, and line/paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def normalise_username(username: str) -> str:
    """Return the comparison key of ``username``: NFKC-normalised, trimmed and case-folded.

    Case folding after NFKC makes "Shop-API", "shop-api" and the full-width "ｓｈｏｐ-ａｐｉ"
    the same user. Confusable characters from other scripts (Cyrillic "а" for Latin "a") stay
    distinct; operators choose ASCII usernames to avoid look-alikes.
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).strip().casefold())


def validate_username(username: str) -> str:
    """Return the trimmed display form of a new username, or raise ValueError naming the problem."""
    display = unicodedata.normalize("NFKC", username).strip()
    if not display:
        raise ValueError("username is empty: give at least one visible character")
    if len(display) > MAX_USERNAME_LENGTH:
        raise ValueError(f"username is longer than {MAX_USERNAME_LENGTH} characters")
    if any(unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in display):
        raise ValueError("username contains control, format, line or paragraph separator characters")
    return display
