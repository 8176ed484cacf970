"""The Worker through faults: its process SIGKILLed while handlers hold events, NATS restarted."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from collections import Counter
from datetime import timedelta
from pathlib import Path

from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests._util import text
from windshift import EmbeddedNats, Event, StreamPointer, Worker

WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import timedelta
    import windshift

    async def main(url, stream):
        async with windshift.connect(url) as client:
            worker = windshift.Worker(client)

            @worker.handler(stream, "w", concurrency=8)
            async def handle(event):
                print(f"{event.id} {event.delivery_attempt}", flush=True)
                await asyncio.sleep(0.01)  # hold it a little: calls overlap

            await worker.run()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)
TOTAL = 600


async def test_a_worker_killed_mid_run_loses_nothing(
    client: windshift.Client, nats_server: EmbeddedNats, name: str, tmp_path: Path
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_consumer(
        name, "w", start=StreamPointer.start(), processing_timeout=timedelta(seconds=1)
    )
    published = {
        (await client.publish(f"{name}.x", StringValue(value=str(i)))).id for i in range(TOTAL)
    }
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)

    async def run_worker(until: int | None, before: set[int]) -> list[tuple[int, int]]:
        """Run the worker process; SIGKILL it after ``until`` calls, or once all is handled."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(script), nats_server.url, name, stdout=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        calls: list[tuple[int, int]] = []
        try:
            while until is None or len(calls) < until:
                line = await asyncio.wait_for(process.stdout.readline(), 30)
                if not line:
                    break
                event_id, attempt = map(int, line.split())
                calls.append((event_id, attempt))
                if until is None and before | {i for i, _ in calls} >= published:
                    break
        finally:
            process.send_signal(signal.SIGKILL)
            # What it printed before it died (each call prints before it settles).
            for line in (await process.stdout.read()).splitlines():
                event_id, attempt = map(int, line.split())
                calls.append((event_id, attempt))
            await process.wait()
        return calls

    first = await run_worker(200, set())  # killed with calls running and events held
    second = await run_worker(None, {i for i, _ in first})  # a new process gets the rest
    calls = first + second
    handled = {event_id for event_id, _ in calls}
    assert handled == published  # nothing lost
    again = [event_id for event_id, attempt in second if attempt > 1]
    assert again, "the killed worker's held events come back with a higher delivery attempt"
    # Only what the killed process had received but not settled comes twice.
    twice = {event_id for event_id, count in Counter(i for i, _ in calls).items() if count > 1}
    assert twice <= {event_id for event_id, _ in first}
    assert len(twice) <= 50  # at most its prefetch (2 * concurrency, at least 50)
    print(
        f"\n[worker killed] handled={len(handled)} calls={len(calls)} "
        f"redelivered={len(again)} twice={len(twice)}"
    )


async def test_the_worker_carries_on_through_a_nats_restart(tmp_path: Path) -> None:
    async with (
        EmbeddedNats(store_dir=tmp_path / "nats") as server,
        windshift.connect(server.url) as client,
    ):
        await client.ensure_stream("orders", subjects=["orders.>"])
        seen: set[str] = set()
        changed = asyncio.Condition()
        worker = Worker(client)

        @worker.handler("orders", "w", subjects=["orders.>"], start=StreamPointer.start())
        async def handle(event: Event) -> None:
            async with changed:
                seen.add(text(event))
                changed.notify_all()

        async def wait_for(values: set[str]) -> None:
            async with asyncio.timeout(30), changed:
                await changed.wait_for(lambda: values <= seen)

        task = asyncio.create_task(worker.run())
        await worker.serving()
        await client.publish("orders.x", StringValue(value="before"))
        await wait_for({"before"})
        await server.restart(kill=True)
        after = {f"after-{i}" for i in range(20)}
        for value in sorted(after):
            for _ in range(100):  # the stream is back once its server loaded it
                try:
                    await client.publish("orders.x", StringValue(value=value))
                    break
                except windshift.UnavailableError:
                    await asyncio.sleep(0.1)
        await wait_for(after)
        await worker.stop()
        await task
