"""A windshift subscriber run as a child process by the resilience tests.

It reports on stdout, one JSON object a line, so that the test keeps its
own record:

``crash`` mode: receives events and settles none; prints ``{"id", "attempt"}``
for each, and after ``--count`` events prints ``{"holding": n}`` and then
either waits to be killed (SIGKILL from the test) or, with ``--exit``, ends
the process on the spot with ``os._exit`` (no cleanup, no NAK).

``drain`` mode: connects, prints ``{"ready": true}`` and waits for a line
on stdin before it subscribes (so that the test can read its memory before
any event arrives). Then it works on the events it is handed, one after the
other (or, with ``--concurrent``, all it is handed at once), each for
``--work`` seconds and then acknowledged (confirmed with ``--confirm``),
counting itself how many it holds; it prints ``{"settled": n,
"in_hand_max": m}`` every ``--report`` events and stops after ``--count``.

    python tests/_subscriber_process.py crash nats://127.0.0.1:4222 orders worker --count 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import windshift
from windshift import Event


def say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def crash(args: argparse.Namespace) -> None:
    async with (
        windshift.connect(args.url) as client,
        client.subscribe(args.stream, args.consumer, max_pending_events=args.max_pending) as events,
    ):
        taken = 0
        async for event in events:
            say(id=event.id, attempt=event.delivery_attempt)
            taken += 1
            if taken == args.count:
                break
        say(holding=taken)
        if args.exit:
            os._exit(3)  # a crash: nothing settled, nothing handed back
        await asyncio.Event().wait()  # until SIGKILLed


async def drain(args: argparse.Namespace) -> None:
    async with windshift.connect(args.url) as client:
        say(ready=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        settled = 0
        in_hand = in_hand_max = 0
        working: set[asyncio.Task[None]] = set()

        async def process(event: Event) -> None:
            nonlocal settled, in_hand
            await asyncio.sleep(args.work)  # the slow part
            await event.ack(confirm=args.confirm)
            in_hand -= 1
            settled += 1
            if settled % args.report == 0:
                say(settled=settled, in_hand_max=in_hand_max)

        async with client.subscribe(
            args.stream, args.consumer, max_pending_events=args.max_pending
        ) as events:
            received = 0
            async for event in events:
                received += 1
                in_hand += 1
                in_hand_max = max(in_hand_max, in_hand)
                if args.concurrent:
                    task = asyncio.create_task(process(event))
                    working.add(task)
                    task.add_done_callback(working.discard)
                else:
                    await process(event)
                if received == args.count:
                    break
            await asyncio.gather(*working)
    say(done=settled, in_hand_max=in_hand_max)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["crash", "drain"])
    parser.add_argument("url")
    parser.add_argument("stream")
    parser.add_argument("consumer")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--max-pending", type=int, default=50)
    parser.add_argument("--report", type=int, default=1000)
    parser.add_argument("--exit", action="store_true")
    parser.add_argument("--confirm", action="store_true")
    parser.add_argument("--work", type=float, default=0.0)
    parser.add_argument("--concurrent", action="store_true")
    args = parser.parse_args()
    asyncio.run(crash(args) if args.mode == "crash" else drain(args))


if __name__ == "__main__":
    main()
