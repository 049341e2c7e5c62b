"""Domain errors: one base class, structured fields, no I/O."""

from __future__ import annotations


class ReflexBlueError(Exception):
    """Base class of every error the product raises on purpose."""


class ValidationError(ReflexBlueError):
    """Input that breaks a rule of the domain; the message names the value and the fix."""


class UnknownPermissionError(ValidationError):
    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(
            f"unknown permission {text!r}: use a key such as 'v2.articles' or a triple such as "
            "'Integrations API V2 / External API / Access to articles' (run `reflexblue permissions` for the list)"
        )


class NotFoundError(ReflexBlueError):
    """A named entity (administration, user, role, key, record) does not exist."""

    def __init__(self, kind: str, name: str, context: str = "") -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} {context + ' ' if context else ''}not found")


class ConflictError(ReflexBlueError):
    """A change that would break a uniqueness rule."""


class SeatLimitError(ReflexBlueError):
    """Linking a user to an External seat would exceed the plan."""

    def __init__(self, used: int, limit: int) -> None:
        self.used = used
        self.limit = limit
        if limit == 0:
            message = (
                "the plan has no External seats (it lacks the 'External Seats / API' usage): "
                "raise the plan's external_seats first, e.g. `reflexblue plan set --external-seats 5`"
            )
        else:
            seats = "the plan's only External seat is" if limit == 1 else f"all {limit} External seats of the plan are"
            message = (
                f"{seats} in use: unlink a user "
                "(`reflexblue users unlink-seat NAME`) or raise the plan's external_seats"
            )
        super().__init__(message)
