"""What the NLP routes' JSON bodies share: one `text` or a list `texts`, exactly one of them.

The OpenAPI document states the either/or (`oneOf` on which key is present), that a text holds
a non-space character (`pattern`), and that neither key may be null, so every body it calls
valid is answered and every other one is refused with a 422 naming the field."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints

__all__ = ["http_text", "ONE_TEXT_OR_TEXTS", "NOT_BLANK", "absent_by_default",
           "one_text_or_texts"]

ONE_TEXT_OR_TEXTS: dict[str, Any] = {"oneOf": [{"required": ["text"]}, {"required": ["texts"]}]}
# Whitespace spelled out rather than `\S`: regex dialects disagree on it (ECMA's \s, which
# JSON Schema validators use, lacks U+0085 and has U+FEFF; Rust's, pydantic's, the reverse;
# Python's str.strip also takes U+001C..U+001F). The union, so every reading agrees.
_SPACE = (r"\t\n\v\f\r\x1c-\x1f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f"
          r"\u205f\u3000\ufeff")
NOT_BLANK = f"[^{_SPACE}]"


def http_text(max_chars: int) -> Any:
    """A text as sent: 1..max_chars characters, at least one of them not whitespace (the
    predictor strips it, so a blank text would be empty)."""
    return Annotated[str, StringConstraints(min_length=1, max_length=max_chars, pattern=NOT_BLANK)]


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def absent_by_default(**kwargs: Any) -> Any:
    """`Field` of an optional key that may be left out but not sent as null (its type does not
    admit None, and the schema shows no null default)."""
    return Field(None, json_schema_extra=_no_default, **kwargs)


def one_text_or_texts(text: object, texts: object) -> None:
    """Raise unless exactly one of `text` / `texts` was given."""
    from common.errors import InvalidInput

    if (text is None) == (texts is None):
        raise InvalidInput("text", "give exactly one of `text` or `texts`")
