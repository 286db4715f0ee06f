"""Validation of readings and the Kafka message format (pure logic)."""

import json
import math
from datetime import datetime, timedelta, timezone

import pytest

from common.errors import ValidationError
from common.readings import (
    MessageError,
    MetricType,
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
    assert r.to_dict()["timestamp"] == "2024-05-01T08:00:00+00:00"


def test_naive_timestamp_means_utc_and_absent_means_received_time():
    assert parse_reading(reading(timestamp="2024-05-01T09:30:00"), NOW).timestamp == datetime(
        2024, 5, 1, 9, 30, tzinfo=timezone.utc
    )
    assert parse_reading(reading(), NOW).timestamp == NOW
    assert parse_reading(reading(timestamp="2024-05-01T09:30:00Z"), NOW).timestamp.hour == 9


def test_form_values_arrive_as_text_and_are_read_as_numbers():
    assert parse_reading(reading(value="42"), NOW).value == 42.0
    assert parse_reading(reading(value=7), NOW).value == 7.0
    assert parse_reading(reading(metric_type=" Humidity "), NOW).metric_type == MetricType.HUMIDITY.value


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
        ({"extra": {"deep": {"deeper": 1}}}, "'extra' must be a plain value, not an object"),
        ({"value": None}, "value is required"),
        ({"value": True}, "not true or false"),
        ({"value": "warm"}, "value must be a number"),
        ({"value": {"v": 1}}, "'value' must be a plain value"),
        ({"value": float("nan")}, "finite"),
        ({"value": "Infinity"}, "finite"),
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
    assert decode_message(encode_message([r.to_dict() for r in readings]).decode()) == readings
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


def test_value_bounds():
    assert parse_reading(reading(value=-1e300), NOW).value == -1e300
    assert math.isfinite(parse_reading(reading(value="1e10"), NOW).value)
    assert parse_reading(reading(timestamp=(NOW + timedelta(hours=23)).isoformat()), NOW)
