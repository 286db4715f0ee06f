"""The benchmark's record: `--record` appends self-contained JSON lines to benchmarks/results.jsonl.

No servers: these call ``local.bench.record`` directly and read the recorded results.
"""

from __future__ import annotations

import json

from local import bench
from local.env import ROOT

# What every recorded line carries besides the benchmark's own fields, so that a line stands on its own.
RUN_FIELDS = ("recorded_at", "run_id", "kind", "commit", "uncommitted_changes", "machine")


def test_record_appends_self_contained_lines(tmp_path):
    path = tmp_path / "benchmarks" / "results.jsonl"  # the folder is created when missing
    first = [
        {"benchmark": "bulk_ingest_end_to_end", "readings_per_s": 60000, "lost": 0},
        {"benchmark": "query_latest", "p99_ms": 1.1},
    ]
    assert bench.record(first, "full", path) == path
    assert bench.record([{"benchmark": "soak_mixed_load", "errors": 0}], "soak 60s", path) == path

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["benchmark"] for line in lines] == [
        "bulk_ingest_end_to_end",
        "query_latest",
        "soak_mixed_load",
    ]
    for line in lines:
        assert all(name in line for name in RUN_FIELDS)
        assert line["recorded_at"].endswith("Z")
    assert [line["kind"] for line in lines] == ["full", "full", "soak 60s"]
    assert lines[0]["run_id"] == lines[1]["run_id"] != lines[2]["run_id"]
    assert lines[0]["readings_per_s"] == 60000 and lines[2]["errors"] == 0
    assert "cores" in lines[0]["machine"] and "Python" in lines[0]["machine"]


def test_record_goes_to_the_results_file_not_the_summary_page():
    assert bench.RESULTS == ROOT / "benchmarks" / "results.jsonl"


def test_recorded_results_parse_line_by_line():
    lines = bench.RESULTS.read_text().splitlines()
    assert lines
    for number, text in enumerate(lines, 1):
        line = json.loads(text)
        missing = [name for name in (*RUN_FIELDS, "benchmark") if name not in line]
        assert not missing, f"{bench.RESULTS.name}:{number} lacks {missing}"


def test_every_benchmark_reading_is_one_the_service_stores():
    """Readings outside the raw retention (or more than a day ahead) would be refused, and the
    benchmark would measure 400s: each part's timestamps stay between the two."""
    from datetime import datetime, timedelta, timezone

    from common.settings import Settings
    from local.bench import readings_for

    now = datetime.now(timezone.utc)
    oldest = now - timedelta(days=Settings().raw_retention_days)
    for offset in (-1_000_000, 0, 300_000, 5_000_000, -1_200_000):
        for reading in (readings_for("b", 20_000, 1000, offset_seconds=offset)[i] for i in (0, -1)):
            assert oldest < datetime.fromisoformat(reading["timestamp"]) < now + timedelta(days=1), offset
