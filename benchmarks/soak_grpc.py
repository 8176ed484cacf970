"""Soak, ``--mode grpc``: ``windshift-grpc serve`` processes SIGKILLed while their clients hold events.

The long version of resilience scenario 3 (tests/test_grpc_resilience.py).
One nats-server (``sync_interval: always`` unless ``--no-sync``), never
killed, and two ``windshift-grpc serve`` processes on it, A and B, each on
its own ports. Everything goes through gRPC:

* set-up: ``EnsureStream`` and ``EnsureConsumer`` (one durable consumer,
  ``--processing-timeout``, 5 s by default);
* one publisher: ``PublishEvent`` with the key as ``idempotency_key``,
  ``--concurrency`` calls in flight, through A at first. A call that fails
  in a way that leaves open whether the event was stored (UNAVAILABLE,
  DEADLINE_EXCEEDED...) is retried with the same key through the other
  server, which the publisher then keeps using (client-side failover);
* ``--grpc-clients`` Events clients on each server, all on that consumer
  (``max_processing_events=--batch``). Each handles every event in
  ``--work`` seconds, then acks it. A client whose call fails records the
  error and subscribes again to the same server, every 0.25 s, until it
  is back.

Every ``--kill-interval`` seconds one serve process (A and B in turn) is
SIGKILLed at a moment when its clients hold events they have not acked,
and started again ``--down`` seconds later (1 s by default) on the same
ports. Nothing of those held events is on the server; NATS delivers them
again once the processing timeout passes, to whichever client asks first.

Every figure comes from the script's own record: the key and acknowledged
id of every publish, every delivery each client saw (time, key, delivery
attempt), the events each client held when its server died, and a raw
nats-py read of the whole stream at the end. Per kill: how many events the
killed server's clients held unacked, how many of them came back and after
how long (about the processing timeout), events no client had seen that
came redelivered (fetched by the dead server, never sent), the longest
pause in first deliveries across all clients, and the restart until the
server was ready.

    .venv/bin/python benchmarks/soak.py --mode grpc --events 20000 --kill-interval 6
    .venv/bin/python benchmarks/soak.py --mode grpc --duration 300 --events 0 --kill-interval 10
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.wrappers_pb2 import StringValue
from soak import (
    RECONNECT_WAIT,
    STREAM,
    SUBJECT,
    SUBJECTS,
    Kill,
    Run,
    Side,
    now,
    read_stream,
    summarize,
)

from windshift._embedded import EmbeddedNats, _die_with_parent, free_port
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )

CONSUMER = "grpc"
SIDE = "grpc"  # the record of every delivery to any of the Events clients
SERVER_NAMES = ("A", "B")
START_TIMEOUT = 30.0
# Codes of a PublishEvent that may or may not have stored the event: the
# server died, or the call's deadline passed, before the answer came. Such a
# call is retried with the same idempotency key; any other code is a bug.
MAYBE_STORED = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
# A channel to a killed server tries to reconnect every RECONNECT_WAIT, like
# the NATS clients of the other modes (gRPC's own backoff grows to minutes).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", int(RECONNECT_WAIT * 1000)),
    ("grpc.min_reconnect_backoff_ms", int(RECONNECT_WAIT * 1000)),
    ("grpc.max_reconnect_backoff_ms", int(RECONNECT_WAIT * 1000)),
]


def describe(args: argparse.Namespace) -> str:
    """The run in a few words, for the first line soak.py prints."""
    return (
        f"serve A and B SIGKILLed in turn every {args.kill_interval:g}s (down {args.down:g}s), "
        f"{args.grpc_clients} Events clients on each, processing timeout "
        f"{args.processing_timeout:g}s, {args.work:g}s of work per event"
    )


# --------------------------------------------------------------------------- serve processes


class Serve:
    """One ``windshift-grpc serve`` process; killed and started again on the same ports."""

    def __init__(self, name: str, nats_url: str, log: Path) -> None:
        self.name = name
        self.grpc_port = free_port()
        self.health_port = free_port()
        while self.health_port == self.grpc_port:
            self.health_port = free_port()
        self.log = log
        # our environment without any setting of serve's, plus its settings
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("NATS_", "GRPC_", "WINDSHIFT_", "OTEL_"))
            and key not in ("HEALTH_PORT", "DEVELOPMENT")
        }
        self.env.update(
            NATS_URL=nats_url,
            GRPC_PORT=str(self.grpc_port),
            HEALTH_PORT=str(self.health_port),
            WINDSHIFT_AUTH="none",
            DEVELOPMENT="false",
            OTEL_SDK_DISABLED="true",
            PYTHONUNBUFFERED="1",
        )
        self.process: asyncio.subprocess.Process | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    async def start(self) -> None:
        """Start the process and wait until its /readyz answers 200."""
        script = Path(sys.executable).parent / "windshift-grpc"
        with open(self.log, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                # dies with this script, even when this script is SIGKILLed
                *_die_with_parent(),
                str(script),
                "serve",
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
                # its own process group: a Ctrl-C reaches this script only,
                # which then stops the process itself
                start_new_session=True,
            )
        deadline = now() + START_TIMEOUT
        while not await ready(self.health_port):
            if self.process.returncode is not None:
                raise RuntimeError(
                    f"serve {self.name} exited with {self.process.returncode}; see {self.log}"
                )
            if now() > deadline:
                raise RuntimeError(f"serve {self.name} not ready in {START_TIMEOUT:g}s")
            await asyncio.sleep(0.02)  # poll pacing: only /readyz tells readiness

    async def kill(self) -> None:
        """SIGKILL, as a crash would."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def stop(self) -> None:
        """SIGTERM, and SIGKILL after 10 s."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def ready(health_port: int) -> bool:
    """Whether ``GET /readyz`` on ``health_port`` answers 200."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", health_port)
    except OSError:
        return False
    try:
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 5)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return b" 200 " in status


# --------------------------------------------------------------------------- the clients


class EventsClient:
    """One subscriber: an Events call on one server, subscribed again whenever it ends.

    Every event is recorded (in the client's own :class:`Side` and the
    shared one) as it arrives, handled for ``work`` seconds, then acked.
    """

    def __init__(
        self,
        name: str,
        serve: Serve,
        shared: Side,
        on_event: Callable[[str], None],
        batch: int,
        work: float,
    ) -> None:
        self.name = name
        self.serve = serve
        self.side = Side(name)
        self.shared = shared
        self.on_event = on_event
        self.batch = batch
        self.work = work
        self.unacked: dict[int, str] = {}  # id -> key: received, the handler still working
        self.acking: dict[int, str] = {}  # id -> key: ack sent, its confirmation not back yet
        self.subscribed_at: list[float] = []
        self.subscribed = asyncio.Event()  # set while a call is subscribed
        self.ack_invalid = 0  # acks answered "unknown or settled": the event was redelivered

    async def run(self) -> None:
        """Subscribe, and subscribe again after every failure; until cancelled."""
        async with grpc.aio.insecure_channel(self.serve.target, options=CHANNEL_OPTIONS) as channel:
            stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
            while True:
                subscribed = len(self.subscribed_at)
                try:
                    await self.session(stub)
                    outcome = "ended OK"  # the server shut down gracefully
                except grpc.aio.AioRpcError as exc:
                    outcome = exc.code().name
                    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                        outcome += f" ({exc.details()})"
                if len(self.subscribed_at) > subscribed:
                    outcome = f"ended {outcome}"  # an open subscription failed
                else:
                    outcome = f"refused {outcome}"  # its server was down
                self.subscribed.clear()
                self.side.errors[outcome] += 1
                self.shared.errors[outcome] += 1
                # What it held is gone with the call: NATS delivers it again
                # once the processing timeout passes.
                self.unacked.clear()
                self.acking.clear()
                await asyncio.sleep(RECONNECT_WAIT)  # reconnect pacing

    async def session(self, stub: Stub) -> None:
        """One Events call, until it ends."""
        requests: asyncio.Queue[pb.EventsRequest | None] = asyncio.Queue()

        async def outgoing() -> AsyncIterator[pb.EventsRequest]:
            while (request := await requests.get()) is not None:
                yield request

        subscribe = pb.EventsRequest.Subscribe(
            stream=STREAM, consumer=CONSUMER, max_processing_events=self.batch
        )
        requests.put_nowait(pb.EventsRequest(subscribe=subscribe))
        call = stub.Events(outgoing())
        handlers: set[asyncio.Task[None]] = set()

        async def handle(event_id: int) -> None:
            await asyncio.sleep(self.work)  # the handler's work
            key = self.unacked.pop(event_id, None)
            if key is None:
                return  # the call ended meanwhile
            self.acking[event_id] = key
            requests.put_nowait(pb.EventsRequest(ack=pb.EventsRequest.Ack(ids=[event_id])))

        try:
            async for response in call:
                kind = response.WhichOneof("response")
                if kind == "event":
                    event = response.event
                    value = StringValue()
                    event.data.Unpack(value)
                    self.side.record(value.value, event.delivery_attempt)
                    self.shared.record(value.value, event.delivery_attempt)
                    self.on_event(value.value)
                    self.unacked[event.id] = value.value
                    task = asyncio.create_task(handle(event.id))
                    handlers.add(task)
                    task.add_done_callback(handlers.discard)
                elif kind == "subscribed":
                    self.subscribed_at.append(now())
                    self.subscribed.set()
                elif kind == "ack_confirmation":
                    confirmation = response.ack_confirmation
                    for event_id in [*confirmation.ids, *confirmation.invalid_ids]:
                        self.acking.pop(event_id, None)
                    self.ack_invalid += len(confirmation.invalid_ids)
                    if confirmation.temporary_failed_ids:  # may be sent again
                        self.side.errors["ack failed for now"] += 1
                        retry = pb.EventsRequest.Ack(ids=confirmation.temporary_failed_ids)
                        requests.put_nowait(pb.EventsRequest(ack=retry))
        finally:
            for task in handlers:
                task.cancel()
            call.cancel()
            requests.put_nowait(None)  # let gRPC's request reader finish


# --------------------------------------------------------------------------- the run


@dataclass
class ServeKill(Kill):
    """A serve process SIGKILLed; ``listening_at`` is when it was ready again."""

    held: int = 0  # events its clients had received and not acked (handlers working)
    acking: int = 0  # events its clients had acked, the confirmation not back
    # delays (from the kill) of the first delivery again of each held event
    held_back: list[float] = field(default_factory=list)
    held_back_to: dict[str, int] = field(default_factory=dict)  # server name -> how many
    acking_back: int = 0  # acked ones delivered again: the ack died with the server
    restarted_at: float | None = None
    ready_after: float | None = None  # from the restart to /readyz answering 200
    # each of its clients: from ready to subscribed again (None: never)
    resubscribed: dict[str, float | None] = field(default_factory=dict)


class GrpcSoak(Run):
    """The gRPC mode (see the module's docstring)."""

    mode = "grpc"

    def __init__(self, args: argparse.Namespace, nats_server: EmbeddedNats, root: Path) -> None:
        super().__init__(args, [SIDE])
        self.nats = nats_server
        self.serves = [
            Serve(name, nats_server.url, root / f"serve-{name}.log") for name in SERVER_NAMES
        ]
        self.clients = [
            EventsClient(
                f"{serve.name}{i + 1}",
                serve,
                self.sides[SIDE],
                self.delivered,
                args.batch,
                args.work,
            )
            for serve in self.serves
            for i in range(args.grpc_clients)
        ]
        self.stubs: list[Stub] = []
        self.publishing_through = 0  # index in self.serves of the publisher's server
        self.acked_through: Counter[str] = Counter()
        # keys the killed server's clients held, by kill: (unacked, acking)
        self.held_keys: list[tuple[set[str], set[str]]] = []
        # keys held unacked at a kill and not delivered again since; the run
        # ends once all are (or the settle timeout passes)
        self.to_come_back: set[str] = set()
        self.all_back = asyncio.Event()
        self.all_back.set()

    def delivered(self, key: str) -> None:
        """Called by the clients on every event they receive."""
        if key in self.to_come_back:
            self.to_come_back.discard(key)
            if not self.to_come_back:
                self.all_back.set()

    # -- publishing

    async def publish(self, key: str) -> None:
        self.record.attempted.add(key)
        data = AnyProto()
        data.Pack(StringValue(value=key))
        request = pb.PublishEventRequest(subject=SUBJECT, data=data, idempotency_key=key)
        while True:
            through = self.publishing_through
            try:
                response = await self.stubs[through].PublishEvent(
                    request, timeout=self.args.request_timeout
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in MAYBE_STORED:
                    raise
                self.record.publish_errors[f"{self.serves[through].name} {exc.code().name}"] += 1
                if self.publishing_through == through:  # fail over (once for all workers)
                    self.publishing_through = 1 - through
                await asyncio.sleep(0.05)  # retry pacing
                continue
            self.record.acked.setdefault(key, response.id)
            self.record.ack_times.append(now())
            self.acked_through[self.serves[through].name] += 1
            return

    # -- failures

    async def killer(self) -> None:
        number = 0
        while not self.done_publishing.is_set():
            with contextlib.suppress(TimeoutError):  # the kill interval
                await asyncio.wait_for(self.done_publishing.wait(), self.args.kill_interval)
            if self.done_publishing.is_set():
                return
            await self.kill(self.serves[number % len(self.serves)])
            number += 1

    async def kill(self, serve: Serve) -> None:
        clients = [client for client in self.clients if client.serve is serve]
        # a moment when its clients hold events (waited for up to a kill interval)
        shared = self.sides[SIDE]
        deadline = now() + self.args.kill_interval
        while not any(client.unacked for client in clients) and now() < deadline:
            shared.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shared.changed.wait(), deadline - now())
        unacked = {key for client in clients for key in client.unacked.values()}
        acking = {key for client in clients for key in client.acking.values()}
        kill = ServeKill("busy", serve.name, now(), held=len(unacked), acking=len(acking))
        if unacked:
            self.to_come_back |= unacked
            self.all_back.clear()
        await serve.kill()  # (the signal goes before any client runs again)
        await asyncio.sleep(self.args.down)  # the server stays down a while
        kill.restarted_at = now()
        await serve.start()
        kill.listening_at = now()
        kill.ready_after = kill.listening_at - kill.restarted_at
        self.kills.append(kill)
        self.held_keys.append((unacked, acking))
        print(
            f"  kill {len(self.kills)}: serve {serve.name} holding {kill.held} unacked "
            f"(+{kill.acking} acks unconfirmed), ready {kill.ready_after:.2f}s after the restart"
        )

    # -- the whole run

    async def set_up(self, stub: Stub) -> None:
        await stub.EnsureStream(
            pb.EnsureStreamRequest(
                name=STREAM, subjects=pb.EnsureStreamRequest.Subjects(subjects=[SUBJECTS])
            )
        )
        request = pb.EnsureConsumerRequest(stream=STREAM, name=CONSUMER, subjects=[SUBJECTS])
        getattr(request, "from").start = True  # ``from`` is a Python keyword
        request.processing_timeout.FromTimedelta(timedelta(seconds=self.args.processing_timeout))
        await stub.EnsureConsumer(request)

    async def run(self) -> dict[str, Any]:
        args = self.args
        channels: list[grpc.aio.Channel] = []
        tasks: list[asyncio.Task[None]] = []  # the clients'
        drivers: list[asyncio.Task[None]] = []  # the publisher's and the killer's
        try:
            await asyncio.gather(*(serve.start() for serve in self.serves))
            started = now()
            for serve in self.serves:
                channel = grpc.aio.insecure_channel(serve.target, options=CHANNEL_OPTIONS)
                channels.append(channel)
                stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
                self.stubs.append(stub)
            await self.set_up(self.stubs[0])
            tasks = [asyncio.create_task(client.run(), name=client.name) for client in self.clients]
            drivers = [
                asyncio.create_task(self.publisher(self.publish), name="publisher"),
                asyncio.create_task(self.killer(), name="killer"),
            ]
            # Both end once publishing has (the killer after a kill under way);
            # either failing (a server that does not start again) ends the run.
            await asyncio.wait(drivers, return_when=asyncio.FIRST_EXCEPTION)
            for driver in drivers:
                if driver.done():
                    driver.result()
            published_in = now() - started
            caught_up = await self.settle(self.quiet_from[-1] + args.settle_timeout)
        finally:
            for task in [*drivers, *tasks]:
                task.cancel()
            await asyncio.gather(*drivers, return_exceptions=True)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for channel in channels:
                await channel.close()
            await asyncio.gather(*(serve.stop() for serve in self.serves))
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                self.sides[SIDE].errors[f"{task.get_name()} ended: {result!r}"] += 1
        stored = await read_stream([self.nats.url])
        return self.figures(stored, published_in, caught_up)

    async def settle(self, deadline: float) -> bool:
        """Wait, until ``deadline``, for the end: whether every acknowledged key was received.

        The end: every acknowledged key received, every event held at a kill
        delivered again, every client subscribed (again).
        """
        caught_up = await self.caught_up(deadline - now())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(
                    self.all_back.wait(), *(client.subscribed.wait() for client in self.clients)
                ),
                max(deadline - now(), 0.001),  # (0 would not even look)
            )
        return caught_up

    def figures(
        self, stored: dict[int, str | None], seconds: float, caught_up: bool
    ) -> dict[str, Any]:
        shared = self.sides[SIDE]
        published_until = self.quiet_from[-1]
        for number, (kill, (unacked, acking)) in enumerate(
            zip(self.kills, self.held_keys, strict=True)
        ):
            assert isinstance(kill, ServeKill)
            next_kill = self.kills[number + 1].killed_at if number + 1 < len(self.kills) else None
            back: dict[str, tuple[float, str]] = {}  # key -> delay, server of its client
            for client in self.clients:
                delays = first_deliveries(client.side, unacked | acking, kill.killed_at)
                for key, delay in delays.items():
                    if key not in back or delay < back[key][0]:
                        back[key] = (delay, client.serve.name)
            kill.held_back = sorted(round(back[key][0], 3) for key in unacked if key in back)
            kill.held_back_to = dict(Counter(back[key][1] for key in unacked if key in back))
            kill.acking_back = sum(1 for key in acking if key in back)
            kill.pause[SIDE] = shared.longest_gap_after(
                kill.killed_at, min(next_kill or published_until, published_until)
            )
            kill.late[SIDE] = shared.late_after(kill.killed_at, next_kill or kill.killed_at + 120)
            assert kill.listening_at is not None
            for client in self.clients:
                if client.serve.name != kill.victim:
                    continue
                kill.first_event[client.name] = client.side.first_after(kill.listening_at)
                again = [at for at in client.subscribed_at if at > kill.killed_at]
                kill.resubscribed[client.name] = again[0] - kill.listening_at if again else None
        # events first seen on a redelivery before any kill: fetched by a
        # server and never sent, with no server dying (none expected)
        first_kill = self.kills[0].killed_at if self.kills else published_until + 120
        late_before_kills = shared.late_after(0.0, first_kill)
        clients = {
            client.name: {
                "received": len(client.side.received),
                "deliveries": len(client.side.deliveries),
                "subscriptions": len(client.subscribed_at),
                "ack_invalid": client.ack_invalid,
                "errors": dict(client.side.errors),
            }
            for client in self.clients
        }
        return {
            **self.totals(stored, seconds, caught_up),
            "acked_through": dict(self.acked_through),
            "publish_errors": dict(self.record.publish_errors),
            "late_before_kills": len(late_before_kills),
            "held_not_back": len(self.to_come_back),
            "clients": clients,
            "per_kill": [asdict(kill) for kill in self.kills],
        }


def first_deliveries(side: Side, keys: set[str], moment: float) -> dict[str, float]:
    """key -> delay from ``moment`` of its first delivery after it, for those of ``keys`` seen."""
    found: dict[str, float] = {}
    start = bisect.bisect_left(side.deliveries, moment, key=lambda delivery: delivery[0])
    for at, key, _ in side.deliveries[start:]:
        if key in keys and key not in found:
            found[key] = at - moment
            if len(found) == len(keys):
                break
    return found


# --------------------------------------------------------------------------- output


def report_kills(result: dict[str, Any]) -> None:
    """The gRPC mode's part of soak.py's report: clients, publishes, each kill."""
    print("clients (errors: 'ended' a subscription that failed, 'refused' one not opened):")
    for name, client in result["clients"].items():
        print(
            f"  {name:<4} received={client['received']} deliveries={client['deliveries']} "
            f"subscriptions={client['subscriptions']} ack_invalid={client['ack_invalid']} "
            f"errors={client['errors']}"
        )
    print(
        f"publishes acknowledged through {result['acked_through']}, "
        f"failed and retried: {result['publish_errors'] or 'none'}"
    )
    print(f"events first seen redelivered before any kill: {result['late_before_kills']}")
    print()
    print(
        "per kill: events the killed server's clients held unacked, how many came back\n"
        "(to clients of which server; delay from the kill: about the processing timeout);\n"
        "acks sent but not confirmed, and how many came back all the same; events no\n"
        "client had seen that came redelivered (fetched by the dead server, never sent);\n"
        "the longest pause in first deliveries across all clients; restart until ready;\n"
        "its clients subscribed again after ready:"
    )
    kills = result["per_kill"]
    for number, kill in enumerate(kills, 1):
        back = kill["held_back"]
        delays = f" after {min(back):.2f}-{max(back):.2f}s" if back else ""
        to = ", ".join(f"{name} {count}" for name, count in sorted(kill["held_back_to"].items()))
        resubscribed = [value for value in kill["resubscribed"].values() if value is not None]
        again = (
            f"{max(resubscribed):.2f}s"
            if len(resubscribed) == len(kill["resubscribed"])
            else "not all"
        )
        late = kill["late"][SIDE]
        late_delays = f" after {min(late):.2f}-{max(late):.2f}s" if late else ""
        print(
            f"  kill {number} ({kill['victim']}): held {kill['held']}, "
            f"back {len(back)}{f' ({to})' if to else ''}{delays}; "
            f"acking {kill['acking']}, back {kill['acking_back']}; "
            f"late {len(late)}{late_delays}; "
            f"pause {kill['pause'][SIDE]:.2f}s; ready {kill['ready_after']:.2f}s; "
            f"resubscribed {again}"
        )
    held = sum(kill["held"] for kill in kills)
    back = [delay for kill in kills for delay in kill["held_back"]]
    print(f"  held events back: {len(back)} of {held}, {summarize(back)}")
    if result["held_not_back"]:
        print(f"  HELD EVENTS NOT DELIVERED AGAIN BY THE END: {result['held_not_back']}")
    print(f"  pause: {summarize([kill['pause'][SIDE] for kill in kills])}")
    print(f"  ready after restart: {summarize([kill['ready_after'] for kill in kills])}")
