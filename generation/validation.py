"""The one strict base of every settings and data model, and pydantic's errors as one line per problem."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo in a config must not be ignored), and values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def describe_validation_error(exc: ValidationError, origin: str | None = None) -> list[str]:
    """One line per error: ``[origin: ]dotted.key: message`` (unknown keys say so)."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        lines.append(f"{origin}: {key}: {msg}" if origin else f"{key}: {msg}")
    return lines
