"""Process scaling of ``windshift-grpc serve --workers N``: aggregate events/s and CPU per event.

For each N of ``--workers`` (1,2,4 by default) it starts ``serve --workers
N`` on one nats-server (an embedded one, or ``--nats-url``), then runs
``--clients`` client processes at once (N when left out: as many as
workers), Node.js (``--client node``, the load generator of ``node/``) or
Python (``--client python``, the grpc.aio clients of ``grpc_workloads.py``),
for each workload:

- ``publish``: unbatched PublishEvent, 128 calls in flight per client;
- ``publish-batch``: PublishEvents of 100 events, 8 calls in flight per client;
- ``consume``: one Events call per client, each on its own durable consumer
  (a subject of its own in a pre-filled stream), acking 64 ids at a time;
- ``consume-batch``: the same with ``max_batch`` 100.

It prints, per N and workload, the aggregate events/s (all events over the
longest client's time), the server's CPU per event (the supervisor and all
its workers, summed from ``/proc/<pid>/stat`` before and after) and
nats-server's CPU per event (embedded only, or ``--nats-pid``). After every
run it checks the stream: every event published stored once (the stream
holds exactly the events sent, ids 1 to the total), every event consumed
acknowledged (no consumer left with pending or unsettled events), and every
client's own count. Any difference stops the benchmark with exit status 1.

    .venv/bin/python benchmarks/grpc_scaling.py --workers 1,2,4 --events 20000
    .venv/bin/python benchmarks/grpc_scaling.py --client python --workloads publish-batch,consume

On a machine with few cores the figures show what each process costs; on
one with many, how far the façade scales.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from google.protobuf.wrappers_pb2 import StringValue

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc_node
import grpc_workloads

import windshift
from windshift import EmbeddedNats, OutgoingEvent, StreamPointer

WORKLOADS = ("publish", "publish-batch", "consume", "consume-batch")
CLIENTS = ("node", "python")
#: The body of every event: a StringValue of 100 bytes serialized, as bench.py's.
BODY = StringValue(value="0" * 20 + "x" * 78).SerializeToString()
FILL_BATCH = 1000
_TICKS = os.sysconf("SC_CLK_TCK")


class Mismatch(RuntimeError):
    """A run lost or duplicated events: its figures would mean nothing."""


# --------------------------------------------------------------------------- CPU from /proc


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used: user + system) of ``pid``; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # After the command in parentheses (which may hold spaces): state,
            # ppid (4th field of the line), ..., utime and stime (14th, 15th).
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu(pid: int) -> float:
    """CPU seconds used by ``pid`` and every live descendant (a supervisor and its workers)."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _stat(int(entry))) is not None:
            parents[int(entry)], used[int(entry)] = found
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += used.get(current, 0.0)
        todo += [child for child, parent in parents.items() if parent == current]
    return total


def child_named(name: str) -> int | None:
    """The pid of this process's child whose command is ``name`` (the embedded nats-server)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/comm") as comm:
                command = comm.read().strip()
            found = _stat(int(entry))
            if command == name and found is not None and found[0] == os.getpid():
                return int(entry)
    return None


# --------------------------------------------------------------------------- one run


@dataclass
class Row:
    """The figures of one workload at one number of workers."""

    workers: int
    clients: int
    workload: str
    events: int
    seconds: float  # the longest client's
    server_cpu_s: float
    nats_cpu_s: float | None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_us_per_event(self) -> float:
        return self.server_cpu_s / self.events * 1e6

    @property
    def nats_us_per_event(self) -> float | None:
        return None if self.nats_cpu_s is None else self.nats_cpu_s / self.events * 1e6


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts that differ by one at most."""
    each, rest = divmod(total, parts)
    return [each + (1 if index < rest else 0) for index in range(parts)]


def client_command(
    client: str, node: str, target: str, workload: str, **options: object
) -> list[str]:
    """One client process's command line (the Node load generator or this file's child mode)."""
    if client == "node":
        return grpc_node.command(node, target, workload, **options)
    return [
        sys.executable,
        os.path.abspath(__file__),
        "--client-child",
        json.dumps({"target": target, "workload": workload, **options}),
    ]


async def run_clients(commands: list[list[str]], timeout: float) -> list[grpc_node.LoadResult]:
    """Start every command at once; each one's result (a JSON line), in order."""
    processes = [
        await asyncio.create_subprocess_exec(
            *line,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for line in commands
    ]
    try:
        outputs = await asyncio.wait_for(
            asyncio.gather(*(process.communicate() for process in processes)), timeout
        )
    except TimeoutError:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        raise Mismatch(f"the clients did not finish within {timeout:g} s") from None
    results = []
    for process, (out, err) in zip(processes, outputs, strict=True):
        if process.returncode not in (0, 2) or not out.strip():
            raise Mismatch(f"a client failed ({process.returncode}): {err.decode().strip()[-500:]}")
        results.append(grpc_node.check(grpc_node.parse(out.decode()), "client"))
    return results


class Scaling:
    """The runs of one invocation: a nats-server, an admin client, the options."""

    def __init__(self, args: argparse.Namespace, nats_url: str, nats_pid: int | None) -> None:
        self.args = args
        self.url = nats_url
        self.nats_pid = nats_pid
        self.admin: windshift.Client | None = None
        self.node = ""
        self.counter = 0

    def say(self, text: str) -> None:
        if not self.args.quiet:
            print(text, file=sys.stderr, flush=True)

    def _admin(self) -> windshift.Client:
        assert self.admin is not None
        return self.admin

    @contextlib.asynccontextmanager
    async def fresh_stream(self, workload: str) -> AsyncIterator[str]:
        self.counter += 1
        stream = f"scaling_{workload.replace('-', '_')}_{os.getpid()}_{self.counter}"
        await self._admin().ensure_stream(stream, subjects=[f"{stream}.>"])
        try:
            yield stream
        finally:
            await self._admin().delete_stream(stream)

    async def measure(
        self, server_pid: int, workers: int, workload: str, commands: list[list[str]]
    ) -> tuple[Row, list[grpc_node.LoadResult]]:
        nats_before = None if self.nats_pid is None else tree_cpu(self.nats_pid)
        server_before = tree_cpu(server_pid)
        results = await run_clients(commands, self.args.timeout)
        server_cpu = tree_cpu(server_pid) - server_before
        nats_cpu = None if self.nats_pid is None else tree_cpu(self.nats_pid) - (nats_before or 0.0)
        row = Row(
            workers=workers,
            clients=len(commands),
            workload=workload,
            events=sum(result.events for result in results),
            seconds=max(result.seconds for result in results),
            server_cpu_s=server_cpu,
            nats_cpu_s=nats_cpu,
        )
        return row, results

    async def publish(self, target: str, server_pid: int, workers: int, workload: str) -> Row:
        counts = shares(self.args.events, self.clients(workers))
        async with self.fresh_stream(workload) as stream:
            rpc = "publish" if workload == "publish" else "publish-batch"
            commands = [
                client_command(
                    self.args.client,
                    self.node,
                    target,
                    rpc,
                    events=count,
                    subject=f"{stream}.c{index}",
                    body_base64=base64.b64encode(BODY).decode(),
                )
                for index, count in enumerate(counts)
            ]
            row, _ = await self.measure(server_pid, workers, workload, commands)
            info = await self._admin().stream_info(stream)
            total = self.args.events
            if (
                info.events != total
                or info.first_id != 1
                or info.last_id != total
                or row.events != total
            ):
                raise Mismatch(
                    f"{workload}, {workers} worker(s): {total:,} events sent, the clients counted "
                    f"{row.events:,}, the stream holds {info.events:,} (ids {info.first_id} to "
                    f"{info.last_id})"
                )
        return row

    async def consume(self, target: str, server_pid: int, workers: int, workload: str) -> Row:
        counts = shares(self.args.events, self.clients(workers))
        admin = self._admin()
        async with self.fresh_stream(workload) as stream:
            for index, count in enumerate(counts):  # not timed
                event = OutgoingEvent(f"{stream}.c{index}", StringValue.FromString(BODY))
                for start in range(0, count, FILL_BATCH):
                    results = await admin.publish_many([event] * min(FILL_BATCH, count - start))
                    for result in results:
                        if isinstance(result, Exception):
                            raise result
                await admin.ensure_consumer(
                    stream,
                    f"c{index}",
                    subjects=[f"{stream}.c{index}"],
                    start=StreamPointer.start(),
                )
            max_batch = grpc_workloads.MAX_BATCH if workload == "consume-batch" else None
            commands = [
                client_command(
                    self.args.client,
                    self.node,
                    target,
                    "consume",
                    events=count,
                    stream=stream,
                    consumers=f"c{index}",
                    max_batch=max_batch,
                )
                for index, count in enumerate(counts)
            ]
            row, _ = await self.measure(server_pid, workers, workload, commands)
            for index, count in enumerate(counts):
                info = await admin.consumer_info(stream, f"c{index}")
                if info.pending_events or info.unsettled_events or info.acknowledged_id < 1:
                    raise Mismatch(
                        f"{workload}, {workers} worker(s): consumer c{index} of {count:,} events "
                        f"left {info.pending_events} pending, {info.unsettled_events} unsettled"
                    )
            if row.events != self.args.events:
                raise Mismatch(
                    f"{workload}, {workers} worker(s): {row.events:,} events acknowledged once "
                    f"of {self.args.events:,}"
                )
        return row

    def clients(self, workers: int) -> int:
        return self.args.clients or workers

    async def run(self) -> list[Row]:
        if self.args.client == "node":
            self.node = await grpc_node.ensure_installed()
        self.admin = await windshift.connect(self.url)
        rows: list[Row] = []
        try:
            for workers in self.args.workers:
                env = {"WINDSHIFT_WORKERS": str(workers)}
                async with grpc_workloads.serve(self.url, env) as target:
                    for workload in self.args.workloads:
                        measure = self.publish if workload.startswith("publish") else self.consume
                        row = await measure(target, target.pid, workers, workload)
                        rows.append(row)
                        nats = row.nats_us_per_event
                        self.say(
                            f"workers {workers} clients {row.clients} {workload:<14} "
                            f"{row.rate:10,.0f} ev/s  server {row.server_us_per_event:6,.0f} µs/ev"
                            + ("" if nats is None else f"  nats-server {nats:5,.0f} µs/ev")
                        )
        finally:
            await self.admin.close()
        return rows


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table, each rate also as a multiple of the 1-worker (first) rate."""
    first: dict[str, float] = {}
    lines = [
        "| workers | clients | workload | events/s | x first | server CPU µs/event "
        "| nats-server CPU µs/event | server cores busy |",
        "|--:|--:|---|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        base = first.setdefault(row.workload, row.rate)
        nats = row.nats_us_per_event
        lines.append(
            f"| {row.workers} | {row.clients} | {row.workload} | {row.rate:,.0f} | "
            f"{row.rate / base if base else 0:.2f} | {row.server_us_per_event:,.0f} | "
            f"{'-' if nats is None else f'{nats:,.0f}'} | {row.server_cpu_s / row.seconds:.2f} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- Python client child


async def client_child(spec: dict[str, object]) -> dict[str, object]:
    """One Python client process's run, reported as the Node load generator reports."""
    target, workload = str(spec["target"]), str(spec["workload"])
    count = int(str(spec["events"]))
    if workload == "consume":
        max_batch = spec.get("max_batch")
        rate = await grpc_workloads.consume_events(
            target,
            str(spec["stream"]),
            str(spec["consumers"]),
            count,
            None if max_batch is None else int(str(max_batch)),
        )
    elif workload == "publish-batch":
        rate = await grpc_workloads.publish_events_batched(
            target, str(spec["subject"]), count, BODY
        )
    else:  # the stream's count checks the ids of unbatched calls
        rate = await grpc_workloads.publish_events(target, str(spec["subject"]), count, BODY)
    return {
        "client": "python",
        "workload": workload,
        "events": count,
        "expected": count,
        "seconds": count / rate,
        "errors": 0,
    }


# --------------------------------------------------------------------------- main


def _numbers(text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of counts, not {text!r}"
        ) from None
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"counts of 1 or more, not {text!r}")
    return numbers


def _workloads(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"workloads among {','.join(WORKLOADS)}, not {','.join(unknown) or repr(text)}"
        )
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Aggregate events/s and server CPU per event of windshift-grpc serve "
        "--workers N, for each N, with as many client processes."
    )
    parser.add_argument("--workers", type=_numbers, default=[1, 2, 4], help="1,2,4")
    parser.add_argument(
        "--clients",
        type=int,
        default=0,
        help="client processes per run (default: as many as workers)",
    )
    parser.add_argument(
        "--client", choices=CLIENTS, default="node", help="node (default) or python"
    )
    parser.add_argument(
        "--events", type=int, default=20_000, help="events per run, all clients (20,000)"
    )
    parser.add_argument(
        "--workloads", type=_workloads, default=list(WORKLOADS), help=",".join(WORKLOADS)
    )
    parser.add_argument("--nats-url", help="a running nats-server (default: an embedded one)")
    parser.add_argument("--nats-pid", type=int, help="its pid, to report its CPU (same machine)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run (300)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to PATH as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--client-child", help=argparse.SUPPRESS)  # internal: one Python client
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error(f"--events: 1 or more, not {args.events}")
    return args


async def main_async(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        if args.nats_url:
            url, pid = args.nats_url, args.nats_pid
        else:
            server = await stack.enter_async_context(EmbeddedNats(sync_always=False))
            url, pid = server.url, child_named("nats-server")
        try:
            rows = await Scaling(args, url, pid).run()
        except (Mismatch, grpc_workloads.CountMismatch) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    print(
        f"{os.cpu_count()} CPUs, {args.client} clients, {args.events:,} events per run, "
        f"load average {os.getloadavg()[0]:.2f}; nats-server "
        + ("embedded (sync_always=False)" if not args.nats_url else args.nats_url)
    )
    print()
    print(table(rows))
    print(f"\n(total {time.perf_counter() - started:.0f} s; every run's counts checked)")
    if args.json:
        document = {
            "cpus": os.cpu_count(),
            "client": args.client,
            "events": args.events,
            "rows": [
                {
                    **asdict(row),
                    "rate": row.rate,
                    "server_us_per_event": row.server_us_per_event,
                    "nats_us_per_event": row.nats_us_per_event,
                }
                for row in rows
            ],
        }
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(document, indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client_child:
        print(json.dumps(asyncio.run(client_child(json.loads(args.client_child)))))
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
