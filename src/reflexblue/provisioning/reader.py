"""Read a provisioning file (JSON or YAML) into a validated :class:`ProvisioningSpec`.

Reading checks everything that needs no database: field names and types, administration codes,
usernames, permissions, the password policy and duplicates. An error names the offending entry
by path and name, for example ``users[2] ("shop-api"): unknown field "pasword"``, and never
contains a password.

A field left out of an entry leaves that property as it is: a listed user without ``roles``
keeps its roles, and a listed role without ``permissions`` keeps its permissions. An empty list
removes them all.
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from reflexblue.domain.errors import ReflexBlueError, ValidationError
from reflexblue.domain.permissions import parse_permission
from reflexblue.domain.usernames import normalise_username, validate_username
from reflexblue.security.passwords import check_password_hash, check_password_policy
from reflexblue.storage.repository import MAX_EXTERNAL_SEATS, validate_administration_code

#: Files larger than this are rejected before parsing.
MAX_FILE_BYTES = 10 * 1024 * 1024

MAX_ADMINISTRATION_NAME_LENGTH = 255
MAX_ROLE_NAME_LENGTH = 150

_TOP_FIELDS = ("plan", "administrations", "users")
_PLAN_FIELDS = ("external_seats",)
_ADMINISTRATION_FIELDS = ("code", "name", "roles")
_ROLE_FIELDS = ("name", "permissions")
_USER_FIELDS = ("username", "password", "password_hash", "active", "external_seat", "roles")
_ROLE_REFERENCE_FIELDS = ("administration", "role")


class ProvisioningError(ValidationError):
    """A provisioning file that cannot be applied; the message names the file, the entry and the fix."""


@dataclass(frozen=True, slots=True)
class RoleSpec:
    """A role of an administration; ``permissions`` contains catalogue keys, or None to keep them as they are."""

    location: str
    name: str
    permissions: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class AdministrationSpec:
    """An administration; ``name`` is None to keep the current name (required only to create it)."""

    location: str
    code: str
    name: str | None
    roles: tuple[RoleSpec, ...]


@dataclass(frozen=True, slots=True)
class RoleReference:
    """A role given to a user: the administration code and the role name."""

    location: str
    administration: str
    role: str


@dataclass(frozen=True, slots=True)
class UserSpec:
    """A user; every None field keeps the current value of an existing user."""

    location: str
    username: str
    password: str | None = field(default=None, repr=False)
    password_hash: str | None = field(default=None, repr=False)
    active: bool | None = None
    external_seat: bool | None = None
    roles: tuple[RoleReference, ...] | None = None


@dataclass(frozen=True, slots=True)
class ProvisioningSpec:
    """The validated content of one provisioning file."""

    source: str
    external_seats: int | None
    administrations: tuple[AdministrationSpec, ...]
    users: tuple[UserSpec, ...]


def read_file(path: str | Path) -> ProvisioningSpec:
    """Read and validate the provisioning file at ``path``.

    The extension picks the format: ``.json`` is JSON, ``.yaml`` and ``.yml`` are YAML, and any
    other name is tried as JSON first, then as YAML. Raises ProvisioningError for any problem.
    """
    path = Path(path)
    source = path.name or str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ProvisioningError(f"provisioning file {str(path)!r} not found: check the path") from None
    except OSError as error:
        raise ProvisioningError(f"cannot read provisioning file {str(path)!r}: {error.strerror}") from None
    if path.is_dir():
        raise ProvisioningError(f"{str(path)!r} is a directory: give the path of a JSON or YAML file")
    if size > MAX_FILE_BYTES:
        raise ProvisioningError(
            f"{source}: file is {size} bytes, larger than the limit of {MAX_FILE_BYTES} bytes (10 MiB): "
            "split it into several files"
        )
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ProvisioningError(f"cannot read provisioning file {str(path)!r}: {error.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ProvisioningError(
            f"{source}: invalid UTF-8 at byte {error.start}: save the file as UTF-8"
        ) from None
    return parse_spec(load_text(text, source, path.suffix.lower()), source)


def load_text(text: str, source: str, suffix: str = "") -> Any:
    """Parse ``text`` as JSON or YAML by ``suffix``; with another suffix try JSON, then YAML."""
    if suffix == ".json":
        return _load_json(text, source)
    if suffix in (".yaml", ".yml"):
        return _load_yaml(text, source)
    try:
        return _load_json(text, source)
    except ProvisioningError:
        return _load_yaml(text, source)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {json.dumps(key)}")
        result[key] = value
    return result


def _load_json(text: str, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as error:
        raise ProvisioningError(
            f"{source}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    except RecursionError:
        raise ProvisioningError(f"{source}: invalid JSON: nested too deeply") from None
    except ValueError as error:
        raise ProvisioningError(f"{source}: invalid JSON: {error}: give each key once per object") from None


def _load_yaml(text: str, source: str) -> Any:
    # NOTE: yaml.safe_load keeps the last value of a key that a mapping repeats, without an error.
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ProvisioningError(f"{source}: invalid YAML{where}: {error.problem or error}") from None
    except yaml.YAMLError as error:
        raise ProvisioningError(f"{source}: invalid YAML: {error}") from None
    except RecursionError:
        raise ProvisioningError(f"{source}: invalid YAML: nested too deeply") from None
    except ValueError as error:  # e.g. an impossible date such as 2024-13-45, which YAML reads as a date
        raise ProvisioningError(f"{source}: invalid YAML value: {error}; quote values that are not dates") from None


def parse_spec(data: Any, source: str) -> ProvisioningSpec:
    """Validate already parsed file content (mappings, lists and scalars) into a ProvisioningSpec."""
    return _SpecParser(source).parse(data)


def _type_name(value: Any) -> str:
    """Describe the type of ``value`` without showing the value, which may be a password."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _entry_location(path: str, name: Any) -> str:
    """Return ``users[2] ("shop-api")``, or only the path when the entry has no usable name."""
    if isinstance(name, str) and name.strip():
        return f"{path} ({json.dumps(name.strip(), ensure_ascii=False)})"
    return path


class _SpecParser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, location: str, problem: str) -> NoReturn:
        prefix = f"{self.source}: {location}: " if location else f"{self.source}: "
        raise ProvisioningError(prefix + problem)

    def mapping(self, value: Any, location: str, allowed: tuple[str, ...], what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(location, f"expected {what} (a mapping of {', '.join(allowed)}), not {_type_name(value)}")
        for key in value:
            if not isinstance(key, str):
                self.fail(location, f"field names must be strings, not {_type_name(key)}")
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {json.dumps(close[0])}?" if close else f"allowed fields are {', '.join(allowed)}"
                self.fail(location, f"unknown field {json.dumps(key, ensure_ascii=False)}: {hint}")
        return value

    def items(self, value: Any, location: str, what: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(location, f"expected a list of {what}, not {_type_name(value)}")
        return value

    def required_string(self, entry: dict[str, Any], key: str, location: str) -> str:
        if entry.get(key) is None:
            self.fail(location, f"missing field {json.dumps(key)}")
        value = entry[key]
        if not isinstance(value, str):
            self.fail(location, f"{json.dumps(key)} must be a string, not {_type_name(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.fail(location, f"{json.dumps(key)} contains a lone surrogate (\\ud800-\\udfff): use valid Unicode")
        return value

    def optional_string(self, entry: dict[str, Any], key: str, location: str) -> str | None:
        if entry.get(key) is None:
            return None
        return self.required_string(entry, key, location)

    def boolean(self, entry: dict[str, Any], key: str, location: str) -> bool | None:
        if key not in entry or entry[key] is None:
            return None
        value = entry[key]
        if not isinstance(value, bool):
            self.fail(location, f"{json.dumps(key)} must be true or false, not {_type_name(value)}")
        return value

    def parse(self, data: Any) -> ProvisioningSpec:
        if data is None:
            self.fail("", "file is empty: give a mapping with any of plan, administrations and users")
        top = self.mapping(data, "", _TOP_FIELDS, "the top level of a provisioning file")
        external_seats = self.parse_plan(top.get("plan"))
        administrations = self.parse_administrations(top.get("administrations"))
        users = self.parse_users(top.get("users"))
        return ProvisioningSpec(self.source, external_seats, administrations, users)

    def parse_plan(self, value: Any) -> int | None:
        if value is None:
            return None
        plan = self.mapping(value, "plan", _PLAN_FIELDS, "the plan")
        if "external_seats" not in plan:
            self.fail("plan", 'missing field "external_seats": give the number of External seats, e.g. 5')
        seats = plan["external_seats"]
        if not isinstance(seats, int) or isinstance(seats, bool):
            self.fail("plan.external_seats", f"expected a whole number, not {_type_name(seats)}")
        if not 0 <= seats <= MAX_EXTERNAL_SEATS:
            self.fail("plan.external_seats", f"invalid value {seats}: use 0 to {MAX_EXTERNAL_SEATS}")
        return seats

    def parse_administrations(self, value: Any) -> tuple[AdministrationSpec, ...]:
        if value is None:
            return ()
        result: list[AdministrationSpec] = []
        seen: dict[str, str] = {}
        for index, item in enumerate(self.items(value, "administrations", "administrations")):
            path = f"administrations[{index}]"
            location = _entry_location(path, item.get("code") if isinstance(item, dict) else None)
            entry = self.mapping(item, location, _ADMINISTRATION_FIELDS, "an administration")
            code = self.required_string(entry, "code", location)
            self.check(location, validate_administration_code, code)
            if code in seen:
                self.fail(location, f"duplicate administration code, already listed as {seen[code]}: "
                                    "list each administration once")
            seen[code] = location
            name = self.optional_string(entry, "name", location)
            if name is not None:
                name = name.strip()
                if not 1 <= len(name) <= MAX_ADMINISTRATION_NAME_LENGTH:
                    self.fail(location, f'"name" must have 1-{MAX_ADMINISTRATION_NAME_LENGTH} characters')
            roles = self.parse_roles(entry.get("roles"), path)
            result.append(AdministrationSpec(location, code, name, roles))
        return tuple(result)

    def parse_roles(self, value: Any, administration_path: str) -> tuple[RoleSpec, ...]:
        if value is None:
            return ()
        result: list[RoleSpec] = []
        seen: dict[str, str] = {}
        for index, item in enumerate(self.items(value, f"{administration_path}.roles", "roles")):
            path = f"{administration_path}.roles[{index}]"
            location = _entry_location(path, item.get("name") if isinstance(item, dict) else None)
            entry = self.mapping(item, location, _ROLE_FIELDS, "a role")
            name = self.required_string(entry, "name", location).strip()
            if not 1 <= len(name) <= MAX_ROLE_NAME_LENGTH:
                self.fail(location, f'"name" must have 1-{MAX_ROLE_NAME_LENGTH} characters')
            key = normalise_username(name)
            if key in seen:
                self.fail(location, f"duplicate role name in this administration, already listed as {seen[key]} "
                                    "(role names are compared case-insensitively)")
            seen[key] = location
            permissions = self.parse_permissions(entry.get("permissions"), location)
            result.append(RoleSpec(location, name, permissions))
        return tuple(result)

    def parse_permissions(self, value: Any, location: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        keys: list[str] = []
        for item in self.items(value, location, "permissions"):
            if not isinstance(item, str):
                self.fail(location, f"each permission must be a string (key or triple), not {_type_name(item)}")
            permission = self.check(location, parse_permission, item)
            if permission.key not in keys:
                keys.append(permission.key)
        return tuple(sorted(keys))

    def parse_users(self, value: Any) -> tuple[UserSpec, ...]:
        if value is None:
            return ()
        result: list[UserSpec] = []
        seen: dict[str, str] = {}
        for index, item in enumerate(self.items(value, "users", "users")):
            path = f"users[{index}]"
            location = _entry_location(path, item.get("username") if isinstance(item, dict) else None)
            entry = self.mapping(item, location, _USER_FIELDS, "a user")
            username = self.required_string(entry, "username", location)
            display = self.check(location, validate_username, username)
            key = normalise_username(display)
            if key in seen:
                self.fail(location, f"duplicate username, already listed as {seen[key]} "
                                    "(usernames are compared case-insensitively): list each user once")
            seen[key] = location
            password, password_hash = self.parse_credentials(entry, location, display)
            result.append(
                UserSpec(
                    location=location,
                    username=display,
                    password=password,
                    password_hash=password_hash,
                    active=self.boolean(entry, "active", location),
                    external_seat=self.boolean(entry, "external_seat", location),
                    roles=self.parse_role_references(entry, location),
                )
            )
        return tuple(result)

    def parse_credentials(
        self, entry: dict[str, Any], location: str, username: str
    ) -> tuple[str | None, str | None]:
        password = entry.get("password")
        password_hash = entry.get("password_hash")
        if password is not None and password_hash is not None:
            self.fail(location, 'give either "password" or "password_hash", not both')
        if password is not None:
            self.check(location, functools.partial(check_password_policy, username=username), password)
        if password_hash is not None:
            self.check(location, check_password_hash, password_hash)
        return password, password_hash

    def parse_role_references(self, entry: dict[str, Any], user_location: str) -> tuple[RoleReference, ...] | None:
        if "roles" not in entry:
            return None
        value = entry["roles"]
        if value is None:
            self.fail(f"{user_location}.roles", "expected a list of roles, not null: use [] to remove all roles")
        result: list[RoleReference] = []
        seen: set[tuple[str, str]] = set()
        for index, item in enumerate(self.items(value, f"{user_location}.roles", "roles")):
            location = f"{user_location}.roles[{index}]"
            reference = self.mapping(item, location, _ROLE_REFERENCE_FIELDS, "a role reference")
            administration = self.required_string(reference, "administration", location)
            role = self.required_string(reference, "role", location).strip()
            key = (administration, normalise_username(role))
            if key in seen:
                continue
            seen.add(key)
            result.append(RoleReference(location, administration, role))
        return tuple(result)

    def check(self, location: str, validate: Any, value: Any) -> Any:
        """Run ``validate(value)`` and turn its error into a ProvisioningError at ``location``."""
        try:
            return validate(value)
        except (ReflexBlueError, ValueError) as error:
            self.fail(location, str(error))

