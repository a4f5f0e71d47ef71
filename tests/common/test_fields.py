"""`common.fields` types accept exactly what their JSON Schema accepts (issue 14: booleans taken
as numbers and timestamps, ids past what JSON readers compare exactly, dates before 1970 in a
schema that allowed them). The schema side is judged by jsonschema_rs, the validator the
Schemathesis fuzz uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from common.fields import EPOCH_MAX, MAX_SAFE_INT, TIMESTAMP_PATTERN, Id, Number, Timestamp


class M(BaseModel):
    ts: Timestamp | None = None
    id: Id | None = None
    x: Number | None = None


SCHEMA = M.model_json_schema()
VALIDATOR = jsonschema_rs.validator_for(SCHEMA)


def accepted(**body) -> bool:
    try:
        M.model_validate(body)
        return True
    except ValidationError:
        return False


@pytest.mark.parametrize("value", [True, False, 1.5, "1", "abc", -1, MAX_SAFE_INT + 1,
                                   2**62 + 95, 0, 5.0, MAX_SAFE_INT])
def test_ids_agree_with_their_schema(value):
    assert accepted(id=value) == VALIDATOR.is_valid({"id": value})


@pytest.mark.parametrize("value", [True, "12.5", 12, 12.5, -0.0, None])
def test_numbers_refuse_booleans_and_strings(value):
    assert accepted(x=value) == VALIDATOR.is_valid({"x": value})


@pytest.mark.parametrize("value", [
    "2018-08-08T10:15:00", "2018-08-08 10:15:00", "2018-08-08T10:15:00Z",
    "2018-08-08T10:15:00.123456789+02:00", "2018-08-08T10:15", "2000-02-29T00:00:00",
    "2100-02-29T00:00:00", "2018-02-30T00:00:00", "0110-08-21T17:01:57Z", "1969-12-31T23:59:59Z",
    "2018-08-08", "2018-08-08T24:00:00", "2018-08-08T10:15:00+24:00", "١٩٧٠-01-01T00:00",
    "2018-08-08T10:15:00\n", True, False, 0, EPOCH_MAX, EPOCH_MAX + 1, -1, 1.5, 1533723300.0,
])
def test_timestamps_agree_with_their_schema(value):
    assert accepted(ts=value) == VALIDATOR.is_valid({"ts": value}), value


@settings(max_examples=200, deadline=None, database=None)
@given(st.from_regex(TIMESTAMP_PATTERN, fullmatch=True))
def test_every_timestamp_the_pattern_admits_parses(text):
    M(ts=text)


@pytest.mark.parametrize("text", [
    # offsets on the range's first and last days (the fuzz drew "1970-01-01T00:20+22:37",
    # which the pattern admitted and the range check refused)
    "1970-01-01T00:20+22:37", "1970-01-01T05:00:00-01:00", "1970-01-01T00:00:00+00:00",
    "1970-01-02T00:00:00+23:59", "9999-12-31T23:00:00-05:00", "9999-12-31T23:00:00+05:00",
    "9999-12-30T23:59:59-23:59", "9999-12-31T23:59:59.999999999Z",
])
def test_the_range_edges_agree_with_the_schema(text):
    assert accepted(ts=text) == VALIDATOR.is_valid({"ts": text}), text


def test_one_instant_in_every_spelling_is_one_naive_utc_datetime():
    want = datetime(2018, 8, 8, 10, 15)
    spellings = ["2018-08-08T10:15:00", "2018-08-08T10:15:00Z", "2018-08-08 12:15:00+02:00",
                 "2018-08-08T05:15:00-05:00", int((want - datetime(1970, 1, 1)).total_seconds()),
                 datetime(2018, 8, 8, 12, 15, tzinfo=timezone(timedelta(hours=2)))]
    assert {M(ts=s).ts for s in spellings} == {want}
    assert M(ts=datetime(2018, 8, 8, 10, 15, tzinfo=UTC)).ts.tzinfo is None


def test_range_errors_say_the_range():
    with pytest.raises(ValidationError, match="from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z"):
        M(ts="1970-01-01T00:30:00+01:00")  # 1969 in UTC
    with pytest.raises(ValidationError, match="between 1970-01-01T00:00:00Z and 9999-12-31"):
        M(ts=datetime(1969, 12, 31, 23))
    with pytest.raises(ValidationError, match="between 1970"):  # no OverflowError
        M(ts=datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))))
