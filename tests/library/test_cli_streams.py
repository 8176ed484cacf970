"""``windshift streams`` and ``windshift stream NAME`` against a real nats-server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import windshift
from tests._cli import run_env, run_in_process, run_windshift
from tests._util import publish_many
from windshift import EmbeddedNats
from windshift._embedded import free_port


def zulu(moment: datetime | None) -> str:
    """A time as --json writes it: ISO 8601, UTC, with a Z."""
    assert moment is not None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def test_streams_json_lists_each_stream_with_its_events_times_and_retention(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(
        name, subjects=[f"{name}.>"], max_age=timedelta(days=7), max_events=1000
    )
    await publish_many(client, f"{name}.a", 3)
    info = await client.stream_info(name)

    code, out, err = await run_in_process("streams", "--json", "--server", nats_server.url)
    assert (code, err) == (0, "")
    [found] = [stream for stream in json.loads(out) if stream["name"] == name]
    assert found == {
        "name": name,
        "subjects": [f"{name}.>"],
        "events": 3,
        "bytes": info.bytes,
        "first_id": 1,
        "last_id": 3,
        "first_time": zulu(info.first_time),
        "last_time": zulu(info.last_time),
        "retention": {
            "policy": "limits",
            "max_age_seconds": 7 * 86400.0,
            "max_events": 1000,
            "max_events_per_subject": None,
            "max_bytes": None,
            "discard": "old",
        },
        "consumers": 0,
    }
    assert info.bytes > 0


async def test_streams_shows_a_table_naming_the_columns(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"], max_age=timedelta(hours=2))
    await publish_many(client, f"{name}.a", 2)
    code, out, _ = await run_in_process("streams", "--server", nats_server.url)
    assert code == 0
    header = next(line for line in out.splitlines() if "Stream" in line)
    for column in ("Subjects", "Events", "Bytes", "First event", "Last event", "Retention"):
        assert column in header, out
    [row] = [line for line in out.splitlines() if f" {name} " in line]
    assert f"{name}.>" in row and "limits, max age 2h00m" in row, row
    assert json.dumps(name) not in out  # a table, not JSON


async def test_stream_shows_one_in_full(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(
        name, subjects=[f"{name}.a", f"{name}.b"], deduplication_window=timedelta(minutes=5)
    )
    before = datetime.now(UTC)
    await publish_many(client, f"{name}.b", 1)

    code, out, _ = await run_in_process("stream", name, "--json", "--server", nats_server.url)
    assert code == 0
    document = json.loads(out)
    assert document["name"] == name
    assert document["subjects"] == [f"{name}.a", f"{name}.b"]
    assert (document["events"], document["first_id"], document["last_id"]) == (1, 1, 1)
    assert datetime.fromisoformat(document["last_time"]) >= before - timedelta(seconds=1)
    assert document["deduplication_window_seconds"] == 300.0
    assert (document["storage"], document["replicas"]) == ("file", 1)
    assert document["config"]["name"] == name  # the raw JetStream configuration

    code, out, _ = await run_in_process("stream", name, "--server", nats_server.url)
    assert code == 0
    assert f"Stream {name}" in out and "Deduplication window" in out and "5m00s" in out


async def test_a_missing_stream_exits_3_and_a_bad_name_2_with_one_line(
    nats_server: EmbeddedNats, name: str
) -> None:
    code, out, err = await run_in_process("stream", name, "--server", nats_server.url)
    assert (code, out) == (3, "")
    assert err.splitlines() == [f"windshift: stream {name!r}: stream not found"]

    code, out, err = await run_in_process(
        "stream", "no such", "--json", "--server", nats_server.url
    )
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith("windshift: invalid stream name 'no such'"), line


async def test_unreachable_nats_exits_1_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    code, out, err = await run_windshift(
        "streams", "--json", cwd=tmp_path, env=run_env(NATS_URL=f"nats://127.0.0.1:{port}")
    )
    assert (code, out) == (1, "")
    [line] = err.splitlines()
    assert line.startswith(f"windshift: cannot connect to NATS at nats://127.0.0.1:{port}"), line
