"""``windshift dead-letters ...`` against a real nats-server: list, show, replay, delete, purge."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests._cli import STOP_TIMEOUT, Start, run_in_process
from tests._util import take
from windshift import EmbeddedNats, StreamPointer


async def dead_letters(client: windshift.Client, name: str, count: int) -> str:
    """A stream ``name`` whose consumer ``billing`` gave up on ``count`` events; its DLQ's name."""
    queue = f"{name}-dead"
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_consumer(
        name, "billing", start=StreamPointer.start(), dead_letter_stream=queue
    )
    for number in range(count):
        await client.publish(f"{name}.orders", StringValue(value=f"order {number}"))
    async with client.subscribe(name, "billing") as events:
        for event in sorted(await take(events, count), key=lambda event: event.id):
            await event.reject(permanently=True, reason=f"cannot bill {event.id}")
    assert len(await client.dead_letters(queue).list()) == count
    return queue


async def cli(nats_server: EmbeddedNats, *args: str) -> tuple[int, Any, str]:
    """``windshift dead-letters ARGS --json``: exit code, the JSON printed, stderr."""
    code, out, err = await run_in_process(
        "dead-letters", *args, "--json", "--server", nats_server.url
    )
    return code, json.loads(out) if out else None, err


async def test_list_and_show_say_where_each_came_from_and_why(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    queue = await dead_letters(client, name, 3)
    code, listed, err = await cli(nats_server, "list", queue)
    assert (code, err) == (0, "")
    assert [(d["id"], d["event_id"], d["reason"]) for d in listed] == [
        (1, 1, "cannot bill 1"),
        (2, 2, "cannot bill 2"),
        (3, 3, "cannot bill 3"),
    ]
    first = listed[0]
    assert (first["stream"], first["consumer"], first["subject"]) == (
        name,
        "billing",
        f"{name}.orders",
    )
    assert (first["attempts"], first["type"], first["data"]) == (
        1,
        "google.protobuf.StringValue",
        "order 0",
    )
    code, page, _ = await cli(nats_server, "list", queue, "--after", "1", "--limit", "1")
    assert [d["id"] for d in page] == [2]

    code, shown, _ = await cli(nats_server, "show", queue, "2")
    assert code == 0
    assert {key: shown[key] for key in ("id", "event_id", "reason", "data")} == {
        "id": 2,
        "event_id": 2,
        "reason": "cannot bill 2",
        "data": "order 1",
    }
    assert shown["headers"]["WS-Dead-Consumer"] == "billing"

    code, out, _ = await run_in_process("dead-letters", "list", queue, "--server", nats_server.url)
    assert code == 0
    [row] = [line for line in out.splitlines() if "cannot bill 3" in line]
    assert f"{name}/billing" in row and f"{name}.orders" in row


async def test_replay_one_a_range_and_all_publishes_them_again_and_removes_them(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    queue = await dead_letters(client, name, 6)
    code, summary, err = await cli(nats_server, "replay", queue, "2")
    assert (code, err) == (0, "")
    assert summary == {
        "stream": queue,
        "replayed": [{"id": 2, "stream": name, "event_id": 7}],
        "failed": [],
    }
    again = await client.get_event(name, 7)
    assert (again.subject, again.unpack(StringValue).value) == (f"{name}.orders", "order 1")

    code, summary, _ = await cli(nats_server, "replay", queue, "1-4")  # 2 is gone already
    assert code == 0
    assert [(r["id"], r["event_id"]) for r in summary["replayed"]] == [(1, 8), (3, 9), (4, 10)]
    remaining = [letter.id for letter in await client.dead_letters(queue).list()]
    assert remaining == [5, 6]

    code, summary, _ = await cli(nats_server, "replay", queue, "--all")
    assert code == 0
    assert [r["id"] for r in summary["replayed"]] == [5, 6]
    assert await client.dead_letters(queue).list() == []
    assert [e.unpack(StringValue).value for e in await client.read_events(name, limit=6)] == [
        f"order {number}" for number in (5, 4, 3, 2, 0, 1)
    ]


async def test_replay_of_letters_that_are_not_there(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    queue = await dead_letters(client, name, 1)
    code, summary, _ = await cli(nats_server, "replay", queue, "9")
    assert code == 3  # nothing of what was asked for is there
    assert summary["replayed"] == []
    assert summary["failed"] == [
        {"id": 9, "error": f"dead letter 9 is not in {queue!r}", "not_found": True}
    ]
    code, summary, _ = await cli(nats_server, "replay", queue, "1,9")
    assert code == 1  # some replayed, some failed
    assert [r["id"] for r in summary["replayed"]] == [1]
    code, summary, _ = await cli(nats_server, "replay", queue, "10-20")
    assert (code, summary["replayed"], summary["failed"]) == (0, [], [])  # an empty range

    code, out, err = await run_in_process(
        "dead-letters", "replay", f"{name}-none", "1", "--server", nats_server.url
    )
    assert (code, out) == (3, "")
    assert len(err.splitlines()) == 1 and f"{name}-none" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give a dead letter's id, a range (10-20) or --all"),
        (["1", "--all"], "give ids ('1') or --all, not both"),
        (["x-1"], "'x-1' is not a dead letter id or a range of them (10-20)"),
        (["5-2"], "'5-2' is not a range of ids from 1 up, low to high"),
    ],
)
async def test_bad_ids_exit_2_naming_them(
    nats_server: EmbeddedNats, name: str, args: list[str], message: str
) -> None:
    code, out, err = await run_in_process(
        "dead-letters", "replay", f"{name}-dead", *args, "--server", nats_server.url
    )
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"windshift: {message}"]


async def test_show_of_a_missing_letter_exits_3(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    queue = await dead_letters(client, name, 1)
    code, shown, err = await cli(nats_server, "show", queue, "5")
    assert (code, shown) == (3, None)
    assert err.splitlines() == [f"windshift: dead letter 5 is not in {queue!r}"]


async def test_delete_removes_without_replaying(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    queue = await dead_letters(client, name, 3)
    code, summary, _ = await cli(nats_server, "delete", queue, "1,3")
    assert code == 0
    assert summary["deleted"] == [{"id": 1}, {"id": 3}]
    assert [letter.id for letter in await client.dead_letters(queue).list()] == [2]
    assert (await client.stream_info(name)).last_id == 3  # nothing published


async def test_purge_needs_yes_off_a_terminal(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    queue = await dead_letters(client, name, 2)
    code, out, err = await run_in_process(
        "dead-letters", "purge", queue, "--server", nats_server.url
    )
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "windshift: purge asks first: give --yes when stdin is not a terminal"
    ]
    assert len(await client.dead_letters(queue).list()) == 2  # untouched
    code, summary, _ = await cli(nats_server, "purge", queue, "--yes")
    assert (code, summary) == (0, {"stream": queue, "purged": 2})
    assert await client.dead_letters(queue).list() == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")
async def test_purge_asks_first_on_a_terminal(
    client: windshift.Client, start_windshift: Start, name: str
) -> None:
    queue = await dead_letters(client, name, 2)
    prompt = f"Remove all 2 dead letters of {queue}? [y/N]: "
    purge = await start_windshift("dead-letters", "purge", queue, terminal=True)
    await purge.wait_for_screen(prompt)
    purge.type("n\n")
    assert await purge.exited(timeout=STOP_TIMEOUT) == 1
    assert purge.lines[-2:] == [prompt + "n", f"windshift: nothing purged: {queue} is as it was"]
    assert len(await client.dead_letters(queue).list()) == 2

    purge = await start_windshift("dead-letters", "purge", queue, terminal=True)
    await purge.wait_for_screen(prompt)
    purge.type("y\n")
    assert await purge.exited(timeout=STOP_TIMEOUT) == 0
    assert purge.lines[-2:] == [prompt + "y", f"purged 2 dead letters of {queue}"]
    assert await client.dead_letters(queue).list() == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")
async def test_replay_on_a_terminal_shows_progress_and_a_summary(
    client: windshift.Client, start_windshift: Start, name: str
) -> None:
    queue = await dead_letters(client, name, 5)
    replay = await start_windshift("dead-letters", "replay", queue, "--all", terminal=True)
    assert await replay.exited(timeout=STOP_TIMEOUT) == 0
    output = "\n".join(replay.lines)
    assert "replaying dead letters" in output and "5/5" in output, output
    assert f"replayed 5 dead letters of {queue}" in output
    assert f"  1 -> event 6 of {name}" in output
    assert await client.dead_letters(queue).list() == []
