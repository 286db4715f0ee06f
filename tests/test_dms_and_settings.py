"""DMS Kafka event parsing and building, and the settings object (pure logic)."""

import pytest

from common.dms import build_event, iter_messages
from common.settings import Settings, SettingsError


def test_documented_event_with_top_level_instance():
    event = {
        "event_version": "v1.0",
        "event_time": 1576737962,
        "trigger_type": "KAFKA",
        "region": "eu-de",
        "instance_id": "08fd3e1b",
        "records": [
            {"messages": ["m1", "m2"], "topic_id": "topic-a"},
            {"messages": [{"message": "m3"}], "topic_id": "topic-b"},
        ],
    }
    messages = list(iter_messages(event))
    assert [(m.topic, m.instance_id, m.value) for m in messages] == [
        ("topic-a", "08fd3e1b", "m1"),
        ("topic-a", "08fd3e1b", "m2"),
        ("topic-b", "08fd3e1b", "m3"),
    ]


def test_instance_id_inside_each_record():
    event = {"records": [{"instance_id": "inst-1", "topic_id": "t", "messages": ["x"]}]}
    assert [(m.instance_id, m.value) for m in iter_messages(event)] == [("inst-1", "x")]
    assert list(iter_messages({})) == []


def test_the_flat_shape_of_older_templates_is_read_too():
    event = {"trigger_type": "KAFKA", "instance_id": "inst-2", "topic_id": "t", "messages": ["x", "y"]}
    assert [(m.topic, m.instance_id, m.value) for m in iter_messages(event)] == [
        ("t", "inst-2", "x"),
        ("t", "inst-2", "y"),
    ]


def test_built_events_have_the_cloud_shape():
    event = build_event({"t": [b'{"a":1}', b"\xff\xfe"]})
    assert event["trigger_type"] == "KAFKA" and event["event_version"] == "v1.0"
    assert event["records"][0]["topic_id"] == "t"
    assert all(isinstance(m, str) for m in event["records"][0]["messages"])
    assert [m.value for m in iter_messages(event)][0] == '{"a":1}'


def test_settings_use_the_original_names_and_defaults():
    settings = Settings.from_env(
        {"DB_HOST": "db", "DB_PORT": "6543", "KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DEMO_MODE": "false"}
    )
    assert (settings.db_host, settings.db_port, settings.kafka_bootstrap_servers) == ("db", 6543, "k:9092")
    assert settings.demo_mode is False
    assert Settings.from_env({}).redis_port == 6379
    for name in [
        "DB_HOST",
        "DB_PORT",
        "DB_NAME",
        "DB_USER",
        "DB_PASSWORD",
        "REDIS_HOST",
        "REDIS_PORT",
        "KAFKA_BOOTSTRAP_SERVERS",
    ]:
        assert name in Settings.names()


def test_bad_settings_say_which_one():
    with pytest.raises(SettingsError, match="DB_PORT must be an integer"):
        Settings.from_env({"DB_PORT": "five"})
    with pytest.raises(SettingsError, match="DEMO_MODE must be true or false"):
        Settings.from_env({"DEMO_MODE": "maybe"})


def test_settings_from_a_function_context_prefer_user_data():
    class Context:
        def getUserData(self, key):  # noqa: N802
            return {"REDIS_HOST": "dcs.internal"}.get(key)

    assert Settings.from_context(Context()).redis_host == "dcs.internal"
