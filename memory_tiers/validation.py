"""Describing pydantic validation errors in messages and logs, without the values."""

from __future__ import annotations

from pydantic import ValidationError


def error_details(exc: ValidationError, whole: str = "") -> str:
    """``"loc: message; ..."`` for each error; the input values (often user text) are left out.

    Args:
        exc: the validation error.
        whole: the location named for an error about the value as a whole (an empty ``loc``).

    Example:
        >>> from pydantic import BaseModel
        >>> class Fact(BaseModel):
        ...     value: str
        >>> try:
        ...     Fact.model_validate({"value": 3})
        ... except ValidationError as exc:
        ...     error_details(exc)
        'value: Input should be a valid string'
    """
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or whole}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)
    )
