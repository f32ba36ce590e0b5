"""Turning pydantic's validation errors into one readable message per problem."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(exc: ValidationError, origin: str | None = None) -> list[str]:
    """One line per error: ``[origin: ]dotted.key: message`` (unknown keys say so)."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        lines.append(f"{origin}: {key}: {msg}" if origin else f"{key}: {msg}")
    return lines
