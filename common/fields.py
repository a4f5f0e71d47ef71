"""Field types whose JSON Schema says exactly what they accept, shared by the verticals' schemas.

Pydantic's lax mode coerces (`true` → 1, `"12.5"` → 12.5, `false` → the epoch), so a request
the OpenAPI document calls invalid would be answered; these types refuse what their schema
refuses and accept all it allows (the Schemathesis fuzz in tests/e2e holds them to that).

- `JSON_INT`: an integer (a JSON number with no fraction: 5 or 5.0), never a boolean or a
  string. `Id`: such an integer in 0..2**53-1, the integers every JSON parser (JavaScript's
  included) and the JSON Schema validators read exactly; past 2**53 a client may round an id.
- `JSON_NUMBER`: a finite JSON number, never a boolean or a string (`Number` unconstrained).
  With constraints the marker goes last, after `Field(...)`, or pydantic leaves `ge`/`le` out
  of the JSON Schema: `Annotated[float, Field(ge=0), JSON_NUMBER]`.
- `Timestamp`: ISO 8601 (`2018-08-08T10:15:00`, `2018-08-08 10:15:00.5+02:00`, `...Z`; no zone
  means UTC) or integer epoch seconds, from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z;
  validated to a naive UTC `datetime`. One convention for every vertical.

Batch jobs convert file cells to numbers before validation (`common.batch_io.typed_cells`), so
a CSV's `"42"` still reaches these types as 42.
"""

from __future__ import annotations

import math
import numbers
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = ["JSON_INT", "JSON_NUMBER", "Id", "Number", "Timestamp", "MAX_SAFE_INT", "EPOCH_MAX",
           "TIMESTAMP_PATTERN", "parse_timestamp"]

MAX_SAFE_INT = 2**53 - 1
EPOCH_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z
_EPOCH = datetime(1970, 1, 1)


def _json_int(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, numbers.Number):
        raise PydanticCustomError("int_type", "Input should be an integer (a JSON number)")
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise PydanticCustomError("int_from_float", "Input should be a whole number")


def _json_number(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise PydanticCustomError("float_type", "Input should be a number (a JSON number)")
    return v


JSON_INT = BeforeValidator(_json_int)
JSON_NUMBER = BeforeValidator(_json_number)
Id = Annotated[int, Field(ge=0, le=MAX_SAFE_INT), JSON_INT]
Number = Annotated[float, Field(allow_inf_nan=False), JSON_NUMBER]

# The pattern admits only real calendar dates (leap years included) at instants within the
# range, so every string it admits parses and every one it refuses is refused: the OpenAPI
# document and this module agree on each value. On the first and last day of the range an offset
# could cross its edge, so 1970-01-01 takes no offset east of UTC and 9999-12-31 none west.
# [0-9], not \d: \d is Unicode-wide.
_D31, _D30, _D28 = r"(?:0[1-9]|[12][0-9]|3[01])", r"(?:0[1-9]|[12][0-9]|30)", \
    r"(?:0[1-9]|1[0-9]|2[0-8])"
_MONTH_DAY = rf"(?:(?:0[13578]|1[02])-{_D31}|(?:0[469]|11)-{_D30}|02-{_D28})"
_YEAR_INSIDE = r"(?:197[1-9]|19[89][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
_LEAP = r"(?:19(?:7[26]|8[048]|9[26])|[2-9][0-9](?:0[48]|[2468][048]|[13579][26])" \
        r"|(?:[2468][048]|[3579][26])00)"
_FIRST_YEAR = (rf"1970-(?:01-(?:0[2-9]|[12][0-9]|3[01])|(?:0[3578]|1[02])-{_D31}"
               rf"|(?:0[469]|11)-{_D30}|02-{_D28})")
_LAST_YEAR = (rf"9999-(?:12-(?:0[1-9]|[12][0-9]|30)|(?:0[13578]|10)-{_D31}"
              rf"|(?:0[469]|11)-{_D30}|02-{_D28})")
_TIME = r"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,9})?)?"
_HHMM = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]"
_BODY = (rf"(?:(?:{_YEAR_INSIDE}-{_MONTH_DAY}|{_LEAP}-02-29|{_FIRST_YEAR}|{_LAST_YEAR})"
         rf"{_TIME}(?:Z|[+-]{_HHMM})?"
         rf"|1970-01-01{_TIME}(?:Z|-{_HHMM}|\+00:00)?"
         rf"|9999-12-31{_TIME}(?:Z|\+{_HHMM}|-00:00)?)")
TIMESTAMP_PATTERN = f"^{_BODY}$"
_TIMESTAMP = re.compile(_BODY)
_PARTS = re.compile(r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})[T ](?P<h>[0-9]{2}):"
                    r"(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2})(?:\.(?P<f>[0-9]+))?)?"
                    r"(?:Z|(?P<sign>[+-])(?P<oh>[0-9]{2}):(?P<om>[0-9]{2}))?")

_TIMESTAMP_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": TIMESTAMP_PATTERN,
         "examples": ["2018-08-08T10:15:00Z", "2018-08-08T12:15:00+02:00"]},
        {"type": "integer", "minimum": 0, "maximum": EPOCH_MAX,
         "description": "seconds since 1970-01-01T00:00:00Z"},
    ],
    "description": "ISO 8601 date and time (no zone: UTC) or epoch seconds; "
                   "1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z",
}


def _out_of_range() -> PydanticCustomError:
    return PydanticCustomError(
        "timestamp_range", "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z")


def parse_timestamp(v: Any) -> datetime:
    """ISO 8601 text, epoch seconds or a datetime → naive UTC datetime (pydantic errors)."""
    if isinstance(v, datetime):  # batch readers hand over parsed datetimes
        if v.tzinfo is not None:
            try:
                v = v.astimezone(UTC).replace(tzinfo=None)
            except OverflowError:
                raise _out_of_range() from None
        if v < _EPOCH:
            raise _out_of_range()
        return v.replace(tzinfo=None)
    if isinstance(v, str):
        return _parse_iso(v)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise PydanticCustomError(
            "timestamp_type", "must be an ISO 8601 string or integer epoch seconds")
    if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
        raise PydanticCustomError("timestamp_type", "epoch seconds must be a whole number")
    seconds = int(v)
    if not 0 <= seconds <= EPOCH_MAX:
        raise _out_of_range()
    return _EPOCH + timedelta(seconds=seconds)


def _parse_iso(text: str) -> datetime:
    m = _PARTS.fullmatch(text) if _TIMESTAMP.fullmatch(text) else None
    if m is None:
        raise PydanticCustomError(
            "timestamp_format",
            "must be ISO 8601 like 2018-08-08T10:15:00Z (a real date and time from "
            "1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z) or integer epoch seconds")
    micro = int((m["f"] or "0")[:6].ljust(6, "0"))
    dt = datetime(int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"]), int(m["m"]),
                  int(m["s"] or 0), micro)
    if m["sign"]:
        offset = timedelta(hours=int(m["oh"]), minutes=int(m["om"]))
        try:
            dt = dt - offset if m["sign"] == "+" else dt + offset
        except OverflowError:
            raise _out_of_range() from None
        if dt < _EPOCH:  # the pattern already refuses these; a datetime is checked the same
            raise _out_of_range()
    return dt


Timestamp = Annotated[datetime, BeforeValidator(parse_timestamp), WithJsonSchema(_TIMESTAMP_SCHEMA)]
