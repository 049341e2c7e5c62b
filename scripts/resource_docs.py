"""Write docs/resources.md from the resource schemas, so the field reference cannot drift from the code.

Usage: .venv/bin/python scripts/resource_docs.py [--check]
With --check it exits with 1 when docs/resources.md differs from what it would write.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

import msgspec

from reflexblue.domain.permissions import BY_KEY, RESOURCES, resource_permission_key
from reflexblue.domain.resources import CODE_PATTERN, FIELDS, SCHEMAS

TARGET = Path(__file__).resolve().parent.parent / "docs" / "resources.md"


def describe_type(annotation: object) -> str:
    """Return a short, readable JSON type for a field annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        if any(isinstance(meta, msgspec.Meta) and meta.pattern == CODE_PATTERN for meta in metadata):
            return "code"
        text = describe_type(base)
        for meta in metadata:
            if isinstance(meta, msgspec.Meta) and meta.pattern:
                text += f" matching `{meta.pattern}`"
            if isinstance(meta, msgspec.Meta) and meta.max_length:
                text += f", at most {meta.max_length} characters"
            if isinstance(meta, msgspec.Meta) and meta.ge is not None:
                text += f", {meta.ge} to {meta.le}" if meta.le is not None else f", at least {meta.ge}"
        return text
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin is list:
        return f"list of {describe_type(typing.get_args(annotation)[0])}"
    if origin is dict:
        return "object of string values"
    names = {str: "string", int: "integer", bool: "boolean"}
    if annotation in names:
        return names[annotation]  # type: ignore[index]
    name = getattr(annotation, "__name__", str(annotation))
    return {"Decimal": "decimal, sent and returned as a string", "date": "date `YYYY-MM-DD`", "OrderLine": "order line"}.get(
        name, name
    )


def render() -> str:
    lines = [
        "# Resource reference",
        "",
        "Generated from `src/reflexblue/domain/resources.py` by `scripts/resource_docs.py`; do not edit by hand.",
        "",
        "Every resource lives under `/api/{v1|v2}/administrations/{code}/{resource}` with `GET` (list), `POST`",
        "(create), and `GET`, `PUT`, `PATCH`, `DELETE` on `.../{id}`. Every record also has the server-assigned",
        "`id`, `created_at` and `modified_at`, and a `code` (required, 1-64 characters of letters, digits, `.`,",
        "`_` and `-`, unique within the administration and resource). Unknown fields are rejected with 422.",
        "Optional fields that are not set are returned as `null`.",
        "",
        "Fields of type *code* hold the `code` of another record and follow the same pattern.",
        "",
        "An order line (in `orders` and `order-patterns`) has `article_code` and `quantity` (required),",
        "`description` and `unit_price` (optional).",
        "",
    ]
    for resource in RESOURCES:
        permission = BY_KEY[resource_permission_key(resource)]
        lines += [
            f"## {resource}",
            "",
            f"API v2 permission: `{permission.key}` ({permission.triple}). Required fields: "
            + ", ".join(f"`{name}`" for name in SCHEMAS[resource].required)
            + ".",
            "",
            "| field | type | required | description |",
            "|---|---|---|---|",
        ]
        for spec in FIELDS[resource]:
            lines.append(
                f"| `{spec.name}` | {describe_type(spec.type)} | {'yes' if spec.required else 'no'} | {spec.doc} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run scripts/resource_docs.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
