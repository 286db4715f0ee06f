"""The time logic of the history and series API (pure): instants, ranges, intervals, zones, buckets, cursors.

The bucket tests check common.timeseries against a second, deliberately naive statement of the same rule
(``reference_starts``: walk the clock minute by minute and apply the rule's words in integer arithmetic)
over whole years in zones that exercise it, and against hand-written expectations around clock changes.
"""

from __future__ import annotations

import base64
import bisect
import functools
import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from common import timeseries as ts
from common.errors import BadRequest
from common.timeseries import (
    AGGREGATES,
    BUCKET_ORIGIN,
    EPOCH,
    INTERVALS,
    INTERVALS_BY_NAME,
    LATEST,
    bucket_of,
    bucket_start,
    decode_cursor,
    encode_cursor,
    format_time,
    local_slot,
    parse_aggregates,
    parse_instant,
    parse_interval,
    parse_range,
    parse_zone,
)

UTC = timezone.utc
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def refused(call, *args, **kwargs) -> str:
    with pytest.raises(BadRequest) as caught:
        call(*args, **kwargs)
    assert caught.value.status == 400
    return caught.value.message


# --- instants and ranges ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01T12:00:00z", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01T12:00:00", "2024-05-01T12:00:00+00:00"),  # naive means UTC
        ("2024-05-01 12:00", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01", "2024-05-01T00:00:00+00:00"),  # a date alone is its midnight UTC
        ("2024-05-01T12:00:00.123456Z", "2024-05-01T12:00:00.123456+00:00"),
        ("  2024-05-01T12:00:00Z ", "2024-05-01T12:00:00+00:00"),
        ("1714564800000", "2024-05-01T12:00:00+00:00"),  # epoch milliseconds, as Grafana sends
        ("1714564800123", "2024-05-01T12:00:00.123000+00:00"),
        ("1714564800000.5", "2024-05-01T12:00:00.000500+00:00"),  # kept to the microsecond
        ("1714564800000.0005", "2024-05-01T12:00:00+00:00"),
        ("0", "1970-01-01T00:00:00+00:00"),
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00+00:00"),
        ("9999-12-30T00:00:00Z", "9999-12-30T00:00:00+00:00"),
    ],
)
def test_instants_are_read_as_iso_8601_or_epoch_milliseconds(raw, expected):
    moment = parse_instant(raw, "from")
    assert moment.tzinfo is UTC
    assert moment.isoformat() == datetime.fromisoformat(expected).isoformat()


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("", "from is empty"),
        ("   ", "from is empty"),
        ("yesterday", "from 'yesterday' is not a time"),
        ("2024-13-01", "is not a time"),
        ("2024-05-01T12:00:00 02:00", "%2B01:00"),  # an unencoded '+' arrives as a space
        ("1969-12-31T23:59:59Z", "outside the times this API handles"),
        ("1970-01-01T00:30:00+01:00", "outside"),
        ("-1", "outside"),
        ("9999-12-31T00:00:00Z", "outside"),
        ("253402300800000", "outside"),  # year 10000 in epoch milliseconds
        ("99999999999999999", "outside"),
        ("0001-01-01T00:00:00+01:00", "outside"),  # before what datetime can hold in UTC
        ("1" * 80, "too long"),
        ("12:00", "is not a time"),
    ],
)
def test_instants_that_are_not_times_or_out_of_range_are_refused_naming_the_parameter(raw, says):
    message = refused(parse_instant, raw, "from")
    assert message.startswith("from ")
    assert says in message
    if "outside" in says:
        assert "1970-01-01T00:00:00+00:00" in message and "9999-12-30T00:00:00+00:00" in message


def test_the_error_names_the_parameter_it_is_about():
    assert refused(parse_instant, "soon", "to").startswith("to 'soon'")


def test_a_range_with_both_ends():
    assert parse_range("2024-05-01T00:00:00Z", "1714564800000", NOW) == (
        at("2024-05-01T00:00:00+00:00"),
        at("2024-05-01T12:00:00+00:00"),
    )


def test_without_a_default_span_absent_ends_stay_open():
    assert parse_range(None, None, NOW) == (None, None)
    assert parse_range("", " ", NOW) == (None, None)
    assert parse_range("2024-04-01", None, NOW) == (at("2024-04-01T00:00:00+00:00"), None)
    assert parse_range(None, "2024-04-01", NOW) == (None, at("2024-04-01T00:00:00+00:00"))


def test_with_a_default_span_absent_ends_are_filled_in():
    day = timedelta(days=1)
    assert parse_range(None, None, NOW, day) == (NOW - day, NOW)
    assert parse_range("2024-04-01", None, NOW, day) == (at("2024-04-01T00:00:00+00:00"), NOW)
    assert parse_range(None, "2024-04-10", NOW, day) == (
        at("2024-04-09T00:00:00+00:00"),
        at("2024-04-10T00:00:00+00:00"),
    )
    assert parse_range(None, "1970-01-01T06:00:00Z", NOW, day) == (EPOCH, at("1970-01-01T06:00:00+00:00"))


@pytest.mark.parametrize("span", [None, timedelta(days=1)])
def test_from_not_before_to_is_refused_quoting_both(span):
    message = refused(parse_range, "2024-05-02T00:00:00Z", "2024-05-01", NOW, span)
    assert "'2024-05-02T00:00:00Z'" in message and "'2024-05-01'" in message
    message = refused(parse_range, "2024-05-01", "1714521600000", NOW, span)  # the same instant twice
    assert "'2024-05-01'" in message and "'1714521600000'" in message and "exclusive" in message


def test_a_from_in_the_future_says_that_to_defaults_to_now():
    message = refused(parse_range, "2030-01-01", None, NOW, timedelta(days=1))
    assert (
        "'2030-01-01'" in message and "defaults to now" in message and "2024-05-01T12:00:00+00:00" in message
    )


def test_a_range_reaching_back_to_the_epoch_from_its_start_is_refused_clearly():
    message = refused(parse_range, None, "0", NOW, timedelta(days=1))
    assert "must be before to '0'" in message


# --- intervals and aggregates ----------------------------------------------------------------------


def test_the_intervals_in_order_with_their_nominal_lengths():
    assert [each.name for each in INTERVALS] == [
        "1m",
        "5m",
        "15m",
        "30m",
        "1h",
        "3h",
        "6h",
        "12h",
        "1d",
        "7d",
    ]
    assert [each.nominal for each in INTERVALS] == [
        60,
        300,
        900,
        1800,
        3600,
        10800,
        21600,
        43200,
        86400,
        604800,
    ]
    assert [each.kind for each in INTERVALS] == ["fixed"] * 8 + ["day", "week"]
    assert all(each.step == timedelta(seconds=each.nominal) for each in INTERVALS)
    with pytest.raises(AttributeError):
        INTERVALS[0].name = "2m"


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        (timedelta(seconds=1), "1m"),
        (timedelta(hours=1), "1m"),
        (timedelta(minutes=500), "1m"),  # exactly 500 buckets
        (timedelta(minutes=500, seconds=1), "5m"),  # a partial bucket counts
        (timedelta(days=1), "5m"),
        (timedelta(days=7), "30m"),
        (timedelta(days=30), "3h"),
        (timedelta(days=365), "1d"),
        (timedelta(days=3500), "7d"),
        (timedelta(days=3600), "7d"),  # nothing gives 500: the coarsest
    ],
)
def test_auto_picks_the_finest_interval_with_at_most_500_buckets(span, expected):
    for raw in (None, "", "auto", " auto "):
        assert parse_interval(raw, NOW - span, NOW).name == expected


def test_a_named_interval_is_used_as_asked():
    assert parse_interval("1h", NOW - timedelta(days=1), NOW) is INTERVALS_BY_NAME["1h"]
    assert parse_interval("1m", NOW - timedelta(minutes=10_000), NOW).name == "1m"  # exactly the limit


def test_a_named_interval_giving_too_many_buckets_names_the_finest_that_would_do():
    message = refused(parse_interval, "1m", NOW - timedelta(days=30), NOW)
    assert "interval 1m gives 43200 buckets" in message and "use interval 5m or coarser" in message
    message = refused(parse_interval, "1m", NOW - timedelta(minutes=10_000, microseconds=1), NOW)
    assert "10001 buckets" in message and "use interval 5m" in message
    message = refused(parse_interval, "1d", NOW - timedelta(days=30_000), NOW)
    assert "use interval 7d" in message


def test_a_range_too_long_for_any_interval_is_refused():
    start, end = EPOCH, LATEST
    for raw in ("auto", "7d", "1m"):
        message = refused(parse_interval, raw, start, end)
        assert "too long" in message and "narrow from and to" in message


@pytest.mark.parametrize("raw", ["2m", "1H", "hour", "1w", "x" * 100])
def test_an_unknown_interval_is_refused_listing_the_valid_ones(raw):
    message = refused(parse_interval, raw, NOW - timedelta(days=1), NOW)
    assert "1m, 5m, 15m, 30m, 1h, 3h, 6h, 12h, 1d, 7d, auto" in message
    assert len(message) < 200


def test_aggregates():
    assert AGGREGATES == ("avg", "min", "max", "sum", "count", "first", "last")
    assert parse_aggregates(None) == ("avg",)
    assert parse_aggregates("") == ("avg",)
    assert parse_aggregates(" , ") == ("avg",)
    assert parse_aggregates("max") == ("max",)
    assert parse_aggregates("last,min, MAX,min,,last") == ("last", "min", "max")
    assert parse_aggregates(",".join(AGGREGATES)) == AGGREGATES


def test_an_unknown_aggregate_is_refused_listing_the_valid_ones():
    message = refused(parse_aggregates, "avg,median")
    assert "'median'" in message and "avg, min, max, sum, count, first, last" in message


# --- zones and formatting --------------------------------------------------------------------------


def test_zones():
    assert parse_zone(None).key == "UTC"
    assert parse_zone("").key == "UTC"
    assert parse_zone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    assert parse_zone(" america/new_york ").key == "America/New_York"  # any letter case
    assert parse_zone("utc").key == "UTC"
    assert parse_zone("Asia/Kathmandu").utcoffset(datetime(2024, 5, 1)) == timedelta(hours=5, minutes=45)


@pytest.mark.parametrize(
    "raw",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "Europe/../../etc/passwd",
        "Europe/Nowhere",
        "localtime",  # the machine's own setting, not a zone a caller can mean
        "Factory",
        "Europe/Berlin\x00",
        "Europe",
        "+01:00",
        "x" * 500,
    ],
)
def test_unknown_or_malformed_zones_are_refused(raw):
    message = refused(parse_zone, raw)
    assert message.startswith("tz ") and "IANA time zone" in message
    assert len(message) < 200


@pytest.mark.parametrize(
    ("instant", "zone", "expected"),
    [
        ("2024-03-31T00:00:00+00:00", "Europe/Berlin", "2024-03-31T01:00:00+01:00"),
        ("2024-03-31T01:00:00+00:00", "Europe/Berlin", "2024-03-31T03:00:00+02:00"),
        ("2024-05-01T12:00:00+00:00", "UTC", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01T12:00:00.250000+00:00", "UTC", "2024-05-01T12:00:00.250000+00:00"),
        ("2024-05-01T12:00:00+00:00", "Asia/Kathmandu", "2024-05-01T17:45:00+05:45"),
        ("2024-11-03T06:30:00+00:00", "America/New_York", "2024-11-03T01:30:00-05:00"),
    ],
)
def test_times_are_written_in_the_zone_with_its_offset(instant, zone, expected):
    assert format_time(at(instant), ZoneInfo(zone)) == expected


# --- cursors ---------------------------------------------------------------------------------------

SCOPE = "device=sensor-1&metric_type=temperature&from=2024-05-01T00:00:00+00:00&to=&limit=100"


def test_a_cursor_round_trips_and_is_small_url_safe_text():
    position = {"t": "2024-05-01T11:59:59.123456+00:00", "m": "temperature"}
    cursor = encode_cursor(position, SCOPE)
    assert decode_cursor(cursor, SCOPE) == position
    assert len(cursor) < 120
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_cursor(f" {cursor} ", SCOPE) == position
    unicode = {"device": "Zürich-1", "n": 3, "x": None}
    assert decode_cursor(encode_cursor(unicode, SCOPE), SCOPE) == unicode


def test_a_cursor_used_with_other_parameters_is_refused():
    cursor = encode_cursor({"t": 1}, SCOPE)
    message = refused(decode_cursor, cursor, SCOPE.replace("limit=100", "limit=50"))
    assert "does not belong to these parameters" in message and "leave cursor out" in message


@pytest.mark.parametrize(
    "raw", ["", "abc", "not a cursor!", "%%%%%%%%%%%%", "A" * 2000, "AAAAAAAAAAAAA", "eyJ0IjoxfQ"]
)
def test_garbage_is_not_a_cursor(raw):
    message = refused(decode_cursor, raw, SCOPE)
    assert "cursor" in message and ("not a cursor this API gave" in message or "does not belong" in message)


def test_an_altered_cursor_is_refused():
    cursor = encode_cursor({"t": "2024-05-01T00:00:00+00:00"}, SCOPE)
    blob = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    altered = blob.replace(b"2024", b"2023")
    forged = base64.urlsafe_b64encode(altered).rstrip(b"=").decode()
    assert "does not belong" in refused(decode_cursor, forged, SCOPE)
    flipped = ("A" if cursor[0] != "A" else "B") + cursor[1:]
    refused(decode_cursor, flipped, SCOPE)


def test_a_cursor_must_carry_an_object():
    payload = json.dumps([1, 2]).encode()
    raw = base64.urlsafe_b64encode(ts._cursor_tag(SCOPE, payload) + payload).rstrip(b"=").decode()
    assert "not a cursor this API gave" in refused(decode_cursor, raw, SCOPE)


# --- buckets: a naive second statement of the rule ----------------------------------------------------

MINUTE = timedelta(minutes=1)
ORIGIN_MINUTES = (datetime(2000, 1, 3) - datetime(1970, 1, 1)) // MINUTE


def offset_minutes(instant: datetime, zone: ZoneInfo) -> int:
    return instant.astimezone(zone).utcoffset() // MINUTE


@functools.lru_cache(maxsize=64)
def clock(zone: ZoneInfo, begin: datetime, end: datetime, grid: timedelta) -> tuple[int, tuple[int, ...]]:
    """The zone's UTC offset (minutes) just before begin and at each grid instant of [begin, end)."""
    count = -(-(end - begin) // grid)
    return offset_minutes(begin - TICK, zone), tuple(
        offset_minutes(begin + n * grid, zone) for n in range(count)
    )


def reference_starts(zone: ZoneInfo, interval, begin: datetime, end: datetime, grid: timedelta):
    """The bucket starts in [begin, end), walking the clock on a grid and applying the rule's words.

    Slots are the local times t with (t - 2000-01-03 00:00) a multiple of the step. At each grid instant:
    without a clock change, a bucket starts if the clock shows a slot's start; at a change from wall time
    A (the time it happens at) to B, a bucket starts if B is in another slot than the clock was in just
    before A, or if the clock goes back over exactly one whole slot (A is its end, B its start). Every
    change in the test zones falls on the grid (asserted), so nothing is missed between grid points.
    Returns the starts and the clock changes seen.
    """
    step, grid_minutes = interval.nominal // 60, grid // MINUTE
    previous, offsets = clock(zone, begin, end, grid)
    first = (begin - EPOCH) // MINUTE - ORIGIN_MINUTES  # UTC minutes since the origin
    starts, changes = [], []
    for index, offset in enumerate(offsets):
        minutes = first + index * grid_minutes
        if offset == previous:
            starts_bucket = (minutes + offset) % step == 0
        else:
            instant = begin + index * grid
            assert offset_minutes(instant - TICK, zone) == previous, "a clock change between grid points"
            changes.append(instant)
            reached, showing = minutes + previous, minutes + offset
            starts_bucket = (reached - 1) // step != showing // step or (
                showing % step == 0 and reached == showing + step
            )
        if starts_bucket:
            starts.append(begin + index * grid)
        previous = offset
    return starts, changes


def test_the_bucket_origin_is_a_monday_midnight():
    assert BUCKET_ORIGIN == datetime(2000, 1, 3) and BUCKET_ORIGIN.weekday() == 0
    week = INTERVALS_BY_NAME["7d"]
    assert local_slot(datetime(2024, 5, 5, 23, 59), week) == datetime(2024, 4, 29)  # Sunday -> Monday
    assert local_slot(datetime(2024, 5, 6), week) == datetime(2024, 5, 6)
    assert local_slot(datetime(1970, 1, 1), week) == datetime(1969, 12, 29)  # before the origin too
    assert local_slot(datetime(2024, 5, 1, 17, 52, 30), INTERVALS_BY_NAME["15m"]) == datetime(
        2024, 5, 1, 17, 45
    )


YEAR_ZONES = [
    ("UTC", 2024),
    ("Europe/Berlin", 2024),
    ("America/New_York", 2024),
    ("Asia/Kolkata", 2024),
    ("Asia/Kathmandu", 2024),
    ("Asia/Kathmandu", 1986),  # +05:30 became +05:45 at midnight: a quarter hour skipped
    ("Australia/Lord_Howe", 2024),  # 30-minute daylight saving
    ("America/Havana", 2024),  # changes at midnight
    ("America/Santiago", 2024),  # changes at midnight
]


@pytest.mark.parametrize(("zone_name", "year"), YEAR_ZONES)
def test_a_year_of_buckets_agrees_with_the_rule_stated_naively(zone_name, year):
    """Over a whole year, for intervals from 15m to 7d: each bucket the naive walk finds is the one the module
    gives at its start, inside it and at its last microsecond; starts increase; and a bucket lasts its
    nominal length unless a clock change falls within it."""
    zone = ZoneInfo(zone_name)
    begin = datetime(year, 1, 1, tzinfo=UTC) - timedelta(days=8)
    end = datetime(year + 1, 1, 1, tzinfo=UTC) + timedelta(days=8)
    changes = []
    for name in ("15m", "30m", "1h", "3h", "1d", "7d"):
        interval = INTERVALS_BY_NAME[name]
        starts, changes = reference_starts(zone, interval, begin, end, timedelta(minutes=15))
        assert starts == sorted(set(starts))
        near_a_change = [
            index
            for index in range(len(starts) - 1)
            if any(starts[index] - interval.step <= change <= starts[index + 1] for change in changes)
        ]
        # Buckets of 15m and 30m are checked near the clock changes and in a sample; the rest all.
        checked = range(len(starts) - 1) if interval.nominal >= 3600 else [*near_a_change, *range(0, 3000, 7)]
        near_a_change = set(near_a_change)
        for index in checked:
            start, following = starts[index], starts[index + 1]
            for instant in (start, start + (following - start) / 2, following - TICK):
                assert bucket_of(instant, interval, zone) == start, (
                    f"{interval.name} {format_time(instant, zone)}: expected the bucket starting "
                    f"{format_time(start, zone)}, got {format_time(bucket_of(instant, interval, zone), zone)}"
                )
            if index not in near_a_change:
                assert following - start == interval.step
    expected_changes = {"UTC": 0, "Asia/Kolkata": 0, "Asia/Kathmandu": 1 if year == 1986 else 0}
    assert len(changes) == expected_changes.get(zone_name, 2)


CHANGE_DAYS = [
    ("Europe/Berlin", "2024-03-31T01:00:00+00:00"),
    ("Europe/Berlin", "2024-10-27T01:00:00+00:00"),
    ("America/New_York", "2024-03-10T07:00:00+00:00"),
    ("America/New_York", "2024-11-03T06:00:00+00:00"),
    ("Australia/Lord_Howe", "2024-04-06T15:00:00+00:00"),
    ("Australia/Lord_Howe", "2024-10-05T15:30:00+00:00"),
    ("America/Havana", "2024-03-10T05:00:00+00:00"),
    ("America/Havana", "2024-11-03T05:00:00+00:00"),
    ("America/Santiago", "2024-04-07T03:00:00+00:00"),
    ("America/Santiago", "2024-09-08T04:00:00+00:00"),
    ("Asia/Kathmandu", "1985-12-31T18:30:00+00:00"),
]


@pytest.mark.parametrize(("zone_name", "change"), CHANGE_DAYS)
def test_minute_buckets_around_a_clock_change_agree_with_the_rule_stated_naively(zone_name, change):
    zone, change = ZoneInfo(zone_name), at(change)
    begin, end = change - timedelta(hours=4), change + timedelta(hours=4)
    for interval in INTERVALS[:4]:
        starts, changes = reference_starts(zone, interval, begin, end, MINUTE)
        assert changes == [change]
        for start, following in zip(starts, starts[1:], strict=False):
            assert bucket_of(start, interval, zone) == start
            assert bucket_of(following - TICK, interval, zone) == start
            assert following - start <= interval.step  # a whole slot repeated is a bucket of its own


@pytest.mark.parametrize(("zone_name", "change"), CHANGE_DAYS)
def test_groups_as_the_database_forms_them_get_the_bucket_of_each_of_their_readings(zone_name, change):
    """The SQL groups readings by (slot of the local wall time, UTC offset) and asks bucket_start once
    per group: every reading of the group must then be in that bucket."""
    zone, change = ZoneInfo(zone_name), at(change)
    for interval in INTERVALS:
        fine = interval.nominal < 900
        reach = timedelta(hours=6) if fine else interval.step + timedelta(days=2)
        grid = MINUTE if fine else timedelta(minutes=15)
        lead_in = interval.step + timedelta(days=1)
        starts, _ = reference_starts(zone, interval, change - reach - lead_in, change + reach, grid)
        groups: dict[tuple[datetime, timedelta], list[datetime]] = {}
        reading = change - reach
        while reading < change + reach:
            local = reading.astimezone(zone)
            key = (local_slot(local.replace(tzinfo=None), interval), local.utcoffset())
            groups.setdefault(key, []).append(reading)
            reading += timedelta(minutes=7, microseconds=1)
        for (slot, offset), members in groups.items():
            start = bucket_start(slot, offset, interval, zone)
            for member in members:
                assert starts[bisect.bisect_right(starts, member) - 1] == start, (
                    f"{interval.name} group {slot} {offset}: {format_time(member, zone)}"
                )


# Hand-written: (zone, interval, the bucket's start, the next bucket's start, how long the bucket lasts).
BUCKETS = [
    # Europe/Berlin: 2024-03-31 02:00 CET becomes 03:00 CEST; 2024-10-27 03:00 CEST becomes 02:00 CET.
    ("Europe/Berlin", "1h", "2024-03-31T01:00:00+01:00", "2024-03-31T03:00:00+02:00", "1:00"),
    ("Europe/Berlin", "3h", "2024-03-31T00:00:00+01:00", "2024-03-31T03:00:00+02:00", "2:00"),
    ("Europe/Berlin", "1d", "2024-03-31T00:00:00+01:00", "2024-04-01T00:00:00+02:00", "23:00"),
    ("Europe/Berlin", "7d", "2024-03-25T00:00:00+01:00", "2024-04-01T00:00:00+02:00", "167:00"),
    ("Europe/Berlin", "1h", "2024-10-27T01:00:00+02:00", "2024-10-27T02:00:00+02:00", "1:00"),
    ("Europe/Berlin", "1h", "2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00", "1:00"),
    ("Europe/Berlin", "1h", "2024-10-27T02:00:00+01:00", "2024-10-27T03:00:00+01:00", "1:00"),
    ("Europe/Berlin", "15m", "2024-10-27T02:45:00+02:00", "2024-10-27T02:00:00+01:00", "0:15"),
    ("Europe/Berlin", "3h", "2024-10-27T00:00:00+02:00", "2024-10-27T03:00:00+01:00", "4:00"),
    ("Europe/Berlin", "1d", "2024-10-27T00:00:00+02:00", "2024-10-28T00:00:00+01:00", "25:00"),
    # America/New_York: 2024-03-10 02:00 EST becomes 03:00 EDT; 2024-11-03 02:00 EDT becomes 01:00 EST.
    ("America/New_York", "1h", "2024-03-10T01:00:00-05:00", "2024-03-10T03:00:00-04:00", "1:00"),
    ("America/New_York", "3h", "2024-03-10T00:00:00-05:00", "2024-03-10T03:00:00-04:00", "2:00"),
    ("America/New_York", "1d", "2024-03-10T00:00:00-05:00", "2024-03-11T00:00:00-04:00", "23:00"),
    ("America/New_York", "1h", "2024-11-03T01:00:00-04:00", "2024-11-03T01:00:00-05:00", "1:00"),
    ("America/New_York", "1h", "2024-11-03T01:00:00-05:00", "2024-11-03T02:00:00-05:00", "1:00"),
    ("America/New_York", "30m", "2024-11-03T01:30:00-04:00", "2024-11-03T01:00:00-05:00", "0:30"),
    ("America/New_York", "3h", "2024-11-03T00:00:00-04:00", "2024-11-03T03:00:00-05:00", "4:00"),
    ("America/New_York", "6h", "2024-11-03T00:00:00-04:00", "2024-11-03T06:00:00-05:00", "7:00"),
    ("America/New_York", "1d", "2024-11-03T00:00:00-04:00", "2024-11-04T00:00:00-05:00", "25:00"),
    # Half- and quarter-hour offsets: buckets start on the local quarter hour, hour, midnight, Monday.
    ("Asia/Kolkata", "15m", "2024-05-01T17:30:00+05:30", "2024-05-01T17:45:00+05:30", "0:15"),
    ("Asia/Kolkata", "1h", "2024-05-01T17:00:00+05:30", "2024-05-01T18:00:00+05:30", "1:00"),
    ("Asia/Kolkata", "1d", "2024-05-01T00:00:00+05:30", "2024-05-02T00:00:00+05:30", "24:00"),
    ("Asia/Kolkata", "7d", "2024-04-29T00:00:00+05:30", "2024-05-06T00:00:00+05:30", "168:00"),
    ("Asia/Kathmandu", "15m", "2024-05-01T17:45:00+05:45", "2024-05-01T18:00:00+05:45", "0:15"),
    ("Asia/Kathmandu", "1h", "2024-05-01T17:00:00+05:45", "2024-05-01T18:00:00+05:45", "1:00"),
    ("Asia/Kathmandu", "12h", "2024-05-01T12:00:00+05:45", "2024-05-02T00:00:00+05:45", "12:00"),
    ("Asia/Kathmandu", "1d", "2024-05-01T00:00:00+05:45", "2024-05-02T00:00:00+05:45", "24:00"),
    # 1986-01-01 00:00 +05:30 became 00:15 +05:45: the 00:00 quarter never happened, the day began at 00:15.
    ("Asia/Kathmandu", "15m", "1985-12-31T23:45:00+05:30", "1986-01-01T00:15:00+05:45", "0:15"),
    ("Asia/Kathmandu", "1d", "1986-01-01T00:15:00+05:45", "1986-01-02T00:00:00+05:45", "23:45"),
    # Australia/Lord_Howe: 2024-04-07 02:00 +11 became 01:30 +10:30; 2024-10-06 02:00 +10:30 became 02:30 +11.
    ("Australia/Lord_Howe", "30m", "2024-04-07T01:30:00+11:00", "2024-04-07T01:30:00+10:30", "0:30"),
    ("Australia/Lord_Howe", "30m", "2024-04-07T01:30:00+10:30", "2024-04-07T02:00:00+10:30", "0:30"),
    ("Australia/Lord_Howe", "1h", "2024-04-07T01:00:00+11:00", "2024-04-07T02:00:00+10:30", "1:30"),
    ("Australia/Lord_Howe", "1d", "2024-04-07T00:00:00+11:00", "2024-04-08T00:00:00+10:30", "24:30"),
    ("Australia/Lord_Howe", "1h", "2024-10-06T01:00:00+10:30", "2024-10-06T02:30:00+11:00", "1:00"),
    ("Australia/Lord_Howe", "1h", "2024-10-06T02:30:00+11:00", "2024-10-06T03:00:00+11:00", "0:30"),
    ("Australia/Lord_Howe", "1d", "2024-10-06T00:00:00+10:30", "2024-10-07T00:00:00+11:00", "23:30"),
    # America/Havana: 2024-03-10 00:00 became 01:00, so that day starts at 01:00; 2024-11-03 01:00 became
    # 00:00: the repeated hour is part of the day (25 h), and two 1h buckets of its own.
    ("America/Havana", "1d", "2024-03-09T00:00:00-05:00", "2024-03-10T01:00:00-04:00", "24:00"),
    ("America/Havana", "1d", "2024-03-10T01:00:00-04:00", "2024-03-11T00:00:00-04:00", "23:00"),
    ("America/Havana", "7d", "2024-03-04T00:00:00-05:00", "2024-03-11T00:00:00-04:00", "167:00"),
    ("America/Havana", "1d", "2024-11-03T00:00:00-04:00", "2024-11-04T00:00:00-05:00", "25:00"),
    ("America/Havana", "1h", "2024-11-03T00:00:00-04:00", "2024-11-03T00:00:00-05:00", "1:00"),
    ("America/Havana", "1h", "2024-11-03T00:00:00-05:00", "2024-11-03T01:00:00-05:00", "1:00"),
    # America/Santiago: 2024-09-08 00:00 became 01:00; 2024-04-07 00:00 went back to 04-06 23:00.
    ("America/Santiago", "1d", "2024-09-08T01:00:00-03:00", "2024-09-09T00:00:00-03:00", "23:00"),
    ("America/Santiago", "1d", "2024-04-06T00:00:00-03:00", "2024-04-07T00:00:00-04:00", "25:00"),
    ("America/Santiago", "1h", "2024-04-06T23:00:00-03:00", "2024-04-06T23:00:00-04:00", "1:00"),
    ("UTC", "7d", "2024-04-29T00:00:00+00:00", "2024-05-06T00:00:00+00:00", "168:00"),
]


@pytest.mark.parametrize(("zone_name", "name", "start", "following", "lasts"), BUCKETS)
def test_buckets_around_clock_changes_and_odd_offsets(zone_name, name, start, following, lasts):
    zone, interval = ZoneInfo(zone_name), INTERVALS_BY_NAME[name]
    begins, ends = at(start), at(following)
    hours, minutes = lasts.split(":")
    assert ends - begins == timedelta(hours=int(hours), minutes=int(minutes))  # the table itself is right
    for instant in (begins, begins + (ends - begins) / 3, ends - TICK):
        assert format_time(bucket_of(instant, interval, zone), zone) == start
    assert format_time(bucket_of(ends, interval, zone), zone) == following


def test_bucket_start_from_a_group_in_the_usual_case_and_across_a_change():
    berlin, day, hour = ZoneInfo("Europe/Berlin"), INTERVALS_BY_NAME["1d"], INTERVALS_BY_NAME["1h"]
    # An ordinary hour: local 14:00 at +02:00 is 12:00 UTC.
    assert bucket_start(datetime(2024, 5, 1, 14), timedelta(hours=2), hour, berlin) == at(
        "2024-05-01T12:00:00Z"
    )
    # Both halves of the 23-hour day (readings before the change at +01:00, after it at +02:00) are one.
    for offset in (timedelta(hours=1), timedelta(hours=2)):
        assert bucket_start(datetime(2024, 3, 31), offset, day, berlin) == at("2024-03-30T23:00:00Z")
    # The repeated hour: one bucket per pass.
    assert bucket_start(datetime(2024, 10, 27, 2), timedelta(hours=2), hour, berlin) == at(
        "2024-10-27T00:00Z"
    )
    assert bucket_start(datetime(2024, 10, 27, 2), timedelta(hours=1), hour, berlin) == at(
        "2024-10-27T01:00Z"
    )


def test_a_group_with_an_offset_the_zone_never_had_there_keeps_its_own_reckoning():
    """The database's zone rules and Python's tzdata can differ in version; a group then still gets a
    start (the reading time's own offset), never an error."""
    berlin, hour = ZoneInfo("Europe/Berlin"), INTERVALS_BY_NAME["1h"]
    start = bucket_start(datetime(2024, 5, 1, 14), timedelta(hours=5), hour, berlin)
    assert start == at("2024-05-01T09:00:00Z")


def test_bucket_starts_hold_microseconds_of_readings_to_the_right_bucket():
    zone, minute = ZoneInfo("America/New_York"), INTERVALS_BY_NAME["1m"]
    assert bucket_of(at("2024-11-03T05:59:59.999999Z"), minute, zone) == at("2024-11-03T05:59:00Z")
    assert bucket_of(at("2024-11-03T06:00:00.000001Z"), minute, zone) == at("2024-11-03T06:00:00Z")


def test_buckets_at_the_ends_of_the_supported_range():
    for zone_name in ("Pacific/Kiritimati", "Etc/GMT+12", "America/New_York"):
        zone = ZoneInfo(zone_name)
        for interval in INTERVALS:
            assert bucket_of(EPOCH, interval, zone) <= EPOCH
            assert bucket_of(LATEST, interval, zone) <= LATEST
