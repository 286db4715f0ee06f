"""Validation of readings and the Kafka message format (pure logic)."""

import json
import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import ValidationError
from common.readings import (
    MessageError,
    MetricType,
    Reading,
    _checked_reading,
    _fast_reading,
    decode_message,
    encode_message,
    parse_bulk,
    parse_reading,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def reading(**overrides):
    data = {"device_id": "sensor-1", "metric_type": "temperature", "value": 21.5}
    data.update(overrides)
    return data


def test_a_valid_reading_is_normalised():
    r = parse_reading(reading(timestamp="2024-05-01T10:00:00+02:00"), NOW)
    assert r.device_id == "sensor-1"
    assert r.metric_type == "temperature" and type(r.metric_type) is str
    assert r.value == 21.5
    assert r.timestamp == datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)
    assert json.loads(r.to_json())["timestamp"] == "2024-05-01T08:00:00+00:00"


@pytest.mark.parametrize("device_id", ["sensor-1", "a", "Plant_7.line:3@site-B", "X" * 128, "  padded  "])
@pytest.mark.parametrize("value", [21.5, -0.0, 0, 1e15, -1e-300, -1e15, 10**15, 123456789.123456789])
@pytest.mark.parametrize("timestamp", ["2024-05-01T10:00:00+02:00", "2024-05-01T10:00:00.000001Z", None])
def test_a_reading_written_as_json_is_the_json_of_its_dict(device_id, value, timestamp):
    """Ingest writes each reading's JSON by hand (for speed); it must equal what json.dumps writes."""
    r = parse_reading(reading(device_id=device_id, value=value, timestamp=timestamp), NOW)
    as_dict = {
        "device_id": r.device_id,
        "metric_type": r.metric_type,
        "value": r.value,
        "timestamp": r.timestamp.isoformat(),
    }
    assert json.loads(r.to_json()) == as_dict
    assert r.to_json() == json.dumps(as_dict, separators=(",", ":"))


def test_naive_timestamp_means_utc_and_absent_means_received_time():
    assert parse_reading(reading(timestamp="2024-05-01T09:30:00"), NOW).timestamp == datetime(
        2024, 5, 1, 9, 30, tzinfo=timezone.utc
    )
    assert parse_reading(reading(), NOW).timestamp == NOW
    assert parse_reading(reading(timestamp="2024-05-01T09:30:00Z"), NOW).timestamp.hour == 9


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"device_id": None}, "device_id is required"),
        ({"device_id": ""}, "device_id is required"),
        ({"device_id": 12}, "device_id must be a string"),
        ({"device_id": "a/b"}, "device_id may contain only"),
        ({"device_id": "x" * 129}, "at most 128"),
        ({"metric_type": None}, "metric_type is required"),
        ({"metric_type": "wind"}, "Unknown metric_type 'wind'"),
        ({"metric_type": ["temperature"]}, "'metric_type' must be a plain value"),
        ({"metric_type": 7}, "metric_type must be a string"),
        ({"timestamp": {"deep": {"deeper": 1}}}, "'timestamp' must be a plain value, not an object"),
        ({"value": None}, "value is required"),
        ({"value": True}, "not true or false"),
        ({"value": "warm"}, "value must be a number"),
        ({"value": "22.5"}, "value must be a number, not the text '22.5': send it without quotes"),
        (
            {"unit": "C"},
            "'unit' is not a field of a reading; send only device_id, metric_type, value and timestamp",
        ),
        ({"metric_type": "Temperature"}, "metric types are lower case: use 'temperature'"),
        ({"metric_type": " power "}, "use 'power'"),
        ({"value": {"v": 1}}, "'value' must be a plain value"),
        ({"value": float("nan")}, "finite"),
        ({"value": 10**400}, "finite"),
        ({"timestamp": "yesterday"}, "not ISO-8601"),
        ({"timestamp": 1714560000}, "ISO-8601 string"),
        ({"timestamp": "2030-01-01T00:00:00Z"}, "in the future"),
    ],
)
def test_bad_readings_are_rejected_with_a_clear_message(overrides, message):
    with pytest.raises(ValidationError) as caught:
        parse_reading(reading(**overrides), NOW)
    assert message in caught.value.message
    assert caught.value.status == 400


def test_bulk_validates_every_reading_and_names_the_bad_one():
    good = reading()
    assert len(parse_bulk({"readings": [good] * 100}, NOW)) == 100
    with pytest.raises(ValidationError, match=r"^Reading 3: Unknown metric_type"):
        parse_bulk({"readings": [good, good, good, reading(metric_type="wind")]}, NOW)
    with pytest.raises(ValidationError, match="is empty"):
        parse_bulk({"readings": []}, NOW)
    with pytest.raises(ValidationError, match="101 readings; send at most 100"):
        parse_bulk({"readings": [good] * 101}, NOW)
    with pytest.raises(ValidationError, match='"readings" list'):
        parse_bulk([good], NOW)
    with pytest.raises(ValidationError, match="must be a list"):
        parse_bulk({"readings": "many"}, NOW)


def test_messages_round_trip_and_keep_valid_readings_of_a_bad_message():
    readings = [parse_reading(reading(timestamp="2024-05-01T10:00:00Z"), NOW)]
    assert decode_message(encode_message([r.to_json() for r in readings]).decode()) == readings
    # one bare reading per message is accepted too
    bare = json.dumps(reading(timestamp="2024-05-01T10:00:00Z"))
    assert decode_message(bare) == readings

    mixed = json.dumps(
        {
            "readings": [
                reading(timestamp="2024-05-01T10:00:00Z"),
                reading(value="hot", timestamp="2024-05-01T10:00:00Z"),
            ]
        }
    )
    with pytest.raises(MessageError) as caught:
        decode_message(mixed)
    assert caught.value.readings == readings
    assert "Reading 1: value must be a number" in caught.value.reason


@pytest.mark.parametrize("raw", ["not json", "[]", "{}", '{"readings": []}', "null", '"text"'])
def test_messages_that_are_not_readings_raise(raw):
    with pytest.raises(MessageError):
        decode_message(raw)


def test_a_queued_reading_must_carry_its_timestamp():
    with pytest.raises(MessageError, match="timestamp"):
        decode_message(json.dumps(reading()))


def test_form_fields_are_text_and_their_value_is_read_as_a_number():
    form = {"device_id": "sensor-1", "metric_type": "voltage", "value": " 229.5 "}
    assert parse_reading(form, NOW, form=True).value == 229.5
    assert math.isfinite(parse_reading({**form, "value": "1e10"}, NOW, form=True).value)
    for value, message in (("Infinity", "finite"), ("1e999", "finite"), ("warm", "value must be a number")):
        with pytest.raises(ValidationError, match=message):
            parse_reading({**form, "value": value}, NOW, form=True)
    with pytest.raises(ValidationError, match="'unit' is not a field"):
        parse_reading({**form, "unit": "V"}, NOW, form=True)


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:01:01+01:00", "9999-12-31T23:00:00-05:00"])
def test_timestamps_moved_off_the_calendar_by_their_offset_are_refused(timestamp):
    with pytest.raises(ValidationError, match="out of range|before 1970|future"):
        parse_reading(reading(timestamp=timestamp), NOW)
    with pytest.raises(MessageError):
        decode_message(json.dumps({"readings": [reading(timestamp=timestamp)]}))


def test_value_bounds():
    assert parse_reading(reading(value=-1e15), NOW).value == -1e15
    assert parse_reading(reading(value=10**15), NOW).value == 1e15
    # Larger values would let two readings of one bucket overflow the rollups' sums (and fail the
    # batch for ever): refused, saying what is allowed.
    for value in (1.5e308, -1e16, 10**20):
        with pytest.raises(ValidationError, match="between -1e"):
            parse_reading(reading(value=value), NOW)
    assert parse_reading(reading(timestamp=(NOW + timedelta(hours=23)).isoformat()), NOW)


# --- the fast path agrees with the checked one ------------------------------------------------------
_texts = st.one_of(
    st.sampled_from(["sensor-1", "Temperature", "power", " power ", "POWER", "", "a" * 129, "dev/1", "é"]),
    st.text(max_size=12),
)
_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    _texts,
    st.lists(st.integers(), max_size=1),
)
_stamps = st.one_of(
    st.none(),
    st.just(""),
    st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5)), None])).map(
        lambda moment: moment.isoformat()
    ),
    st.sampled_from(["2024-05-01T10:00:00Z", "1969-12-31T23:59:59Z", "2024-05-03T12:00:00+00:00", "soon"]),
    _values,
)
_keys = st.sampled_from(["device_id", "metric_type", "value", "timestamp", "extra"])


_good_stamps = st.datetimes(
    min_value=datetime(1969, 12, 30), timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-5))])
).map(lambda moment: moment.isoformat())


@settings(max_examples=600, deadline=None, derandomize=True)
@given(
    base=st.fixed_dictionaries(
        {
            "device_id": st.one_of(
                st.sampled_from(["sensor-1", "a:b@c.d_e-f", "X" * 128]),
                st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,20}", fullmatch=True),
            ),
            "metric_type": st.sampled_from(MetricType.names()),
            "value": st.one_of(st.floats(), st.integers(-(2**60), 2**60)),
        },
        optional={"timestamp": st.one_of(_good_stamps, _good_stamps, _stamps)},
    ),
    extra=st.dictionaries(_keys, st.one_of(_stamps, _values), max_size=1) | st.just({}),
    drop=st.lists(_keys, max_size=1) | st.just([]),
    stamped=st.booleans(),
)
def test_the_fast_path_accepts_only_what_the_checked_path_accepts_and_reads_it_the_same(
    base, extra, drop, stamped
):
    data = {**base, **extra}
    for key in drop:
        data.pop(key, None)
    fast = _fast_reading(data, NOW, NOW + timedelta(days=1), stamped=stamped)
    if fast is None:
        return
    assert fast == _checked_reading(data, NOW)
    assert all(type(field) is type(want) for field, want in zip(fast, ("", "", 0.0, NOW), strict=True))
    assert not stamped or data.get("timestamp") not in (None, "")


def test_the_fast_path_takes_clean_readings_with_and_without_timestamp():
    latest = NOW + timedelta(days=1)
    assert _fast_reading(reading(), NOW, latest) == ("sensor-1", "temperature", 21.5, NOW)
    assert _fast_reading(reading(value=3, timestamp="2024-05-01T10:00:00+02:00"), NOW, latest) == (
        "sensor-1",
        "temperature",
        3.0,
        datetime(2024, 5, 1, 8, tzinfo=timezone.utc),
    )
    assert _fast_reading(reading(), NOW, latest, stamped=True) is None


def test_splitting_a_batch_keeps_each_device_in_one_part_and_every_reading_once():
    from common.consume import split_by_device

    moment = datetime(2024, 1, 1, tzinfo=timezone.utc)
    readings = [Reading(f"dev-{i % 37}", "power", float(i), moment) for i in range(1000)]
    parts = split_by_device(readings, 2)
    assert len(parts) == 2
    assert sorted(r.value for part in parts for r in part) == [float(i) for i in range(1000)]
    devices = [{r.device_id for r in part} for part in parts]
    assert not devices[0] & devices[1]
    assert split_by_device(readings, 1) == [readings]
    assert split_by_device([], 2) == [[]]
