"""Which provider gives the tests their servers: the environment, containers or embedded."""

from __future__ import annotations

import time

import pytest

from . import servers
from .servers import ServerChoiceError, choose

ALL_EXTERNAL = {"DB_HOST": "db.example", "REDIS_HOST": "cache.example", "KAFKA_BOOTSTRAP_SERVERS": "mq:9092"}


class Engine:
    """Stands in for the Docker ping only (the choice is pure logic); counts how often it is asked."""

    def __init__(self, answers: bool):
        self.answers = answers
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.answers


def test_the_environment_wins_and_docker_is_not_even_asked():
    engine = Engine(True)
    assert choose(ALL_EXTERNAL, engine) == {"postgres": "external", "redis": "external", "kafka": "external"}
    assert choose({**ALL_EXTERNAL, "TEST_SERVERS": "containers"}, engine)["kafka"] == "external"
    assert engine.asked == 0


def test_containers_where_a_docker_engine_answers():
    engine = Engine(True)
    assert choose({}, engine) == {"postgres": "containers", "redis": "containers", "kafka": "containers"}
    assert engine.asked == 1


def test_embedded_where_no_engine_answers():
    assert choose({}, Engine(False)) == {"postgres": "embedded", "redis": "embedded", "kafka": "embedded"}
    assert choose({"TEST_SERVERS": "auto"}, Engine(False))["redis"] == "embedded"


def test_only_the_servers_the_environment_does_not_name_are_started():
    env = {"DB_HOST": "db.example"}
    assert choose(env, Engine(True)) == {"postgres": "external", "redis": "containers", "kafka": "containers"}
    assert choose(env, Engine(False)) == {"postgres": "external", "redis": "embedded", "kafka": "embedded"}
    # An empty variable names nothing.
    assert choose({"DB_HOST": ""}, Engine(False))["postgres"] == "embedded"


def test_the_switch_forces_embedded_without_asking_docker():
    engine = Engine(True)
    assert choose({"TEST_SERVERS": "embedded"}, engine)["postgres"] == "embedded"
    assert choose({"TEST_SERVERS": " Embedded "}, engine)["kafka"] == "embedded"
    assert engine.asked == 0


def test_the_switch_forces_containers_and_says_so_when_docker_is_missing():
    assert choose({"TEST_SERVERS": "containers"}, Engine(True))["redis"] == "containers"
    with pytest.raises(ServerChoiceError, match="no Docker engine answers.*unset TEST_SERVERS"):
        choose({"TEST_SERVERS": "containers"}, Engine(False))


def test_an_unknown_switch_value_is_an_error_not_a_guess():
    with pytest.raises(
        ServerChoiceError, match="TEST_SERVERS='docker' is not one of auto, containers, embedded"
    ):
        choose({"TEST_SERVERS": "docker"}, Engine(True))


def test_asking_a_docker_engine_that_is_not_there_is_quick(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    started = time.monotonic()
    assert servers.docker_engine_answers(timeout=1) is False
    assert time.monotonic() - started < 5


def test_start_servers_reports_the_plan_and_starts_nothing_for_external_servers(tmp_path):
    plan, env, stop = servers.start_servers(ALL_EXTERNAL, tmp_path)
    assert plan == {"postgres": "external", "redis": "external", "kafka": "external"} and env == {}
    stop()
    assert servers.describe(plan) == "postgres: external, redis: external, kafka: external"
