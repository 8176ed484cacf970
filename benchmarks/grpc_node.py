"""The gRPC workloads of grpc_workloads.py driven by the Node.js load generator (``node/``).

The same calls as the Python clients (PublishEvent with many in flight,
PublishEvents of :data:`grpc_workloads.BATCH` events, Events consume + ack
with and without ``max_batch``), with the same body, made by
``@grpc/grpc-js`` in a ``node`` subprocess: a client that is not the limit
the Python one is. Each function returns events per second, and raises
:class:`grpc_workloads.CountMismatch` when the load generator reports an
event lost, refused or seen twice.

The load generator's packages are installed (``npm ci``) on first use when
``benchmarks/node/node_modules`` is missing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpc_workloads import ACK_BATCH, BATCH, BATCH_CALLS, MAX_PROCESSING_EVENTS, CountMismatch

LOADGEN_DIR = Path(__file__).with_name("node")
LOADGEN = LOADGEN_DIR / "loadgen.js"
CHANNELS = 4  # connections of the unbatched PublishEvent workload
IN_FLIGHT = 128  # PublishEvent calls in flight, as the Python client
INSTALL_TIMEOUT = 300.0


class NodeMissing(RuntimeError):
    """``node`` (or ``npm``, to install the load generator's packages) is not installed."""


@dataclass(frozen=True)
class LoadResult:
    """What one run of the load generator printed."""

    events: int  # distinct ids answered (publish) or distinct events acknowledged (consume)
    expected: int
    seconds: float
    errors: int
    raw: dict[str, Any]

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def node_binary() -> str:
    """The ``node`` executable. Raises :class:`NodeMissing` when there is none."""
    node = shutil.which("node")
    if node is None:
        raise NodeMissing("node is not installed: the Node.js load generator cannot run")
    return node


async def ensure_installed() -> str:
    """Install the load generator's packages with ``npm ci`` if needed; returns ``node``."""
    node = node_binary()
    if (LOADGEN_DIR / "node_modules").is_dir():
        return node
    npm = shutil.which("npm")
    if npm is None:
        raise NodeMissing("node is installed but npm is not: cannot install benchmarks/node")
    process = await asyncio.create_subprocess_exec(
        npm,
        "ci",
        "--no-audit",
        "--no-fund",
        cwd=str(LOADGEN_DIR),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), INSTALL_TIMEOUT)
    if process.returncode != 0:
        raise RuntimeError(f"npm ci in {LOADGEN_DIR} failed: {err.decode().strip()[-500:]}")
    return node


def command(node: str, target: str, workload: str, **options: object) -> list[str]:
    """The command line of one load generator run (options by their Python names)."""
    line = [node, str(LOADGEN), "--target", target, "--workload", workload]
    for name, value in options.items():
        if value is not None:
            line += [f"--{name.replace('_', '-')}", str(value)]
    return line


def parse(out: str) -> LoadResult:
    """The result line (the last line of JSON) the load generator printed."""
    raw = json.loads(out.strip().splitlines()[-1])
    return LoadResult(
        events=int(raw["events"]),
        expected=int(raw["expected"]),
        seconds=float(raw["seconds"]),
        errors=int(raw["errors"]),
        raw=raw,
    )


def check(result: LoadResult, what: str) -> LoadResult:
    """``result`` when every event was counted once and nothing failed; else CountMismatch."""
    if result.errors or result.events != result.expected:
        raise CountMismatch(
            f"Node {what}: {result.events} of {result.expected} events, {result.errors} "
            f"errors ({result.raw.get('first_error', 'no error message')})"
        )
    return result


async def run(target: str, workload: str, timeout: float = 600.0, **options: object) -> LoadResult:
    """One load generator run to its end; its result, checked (see :func:`check`)."""
    node = await ensure_installed()
    process = await asyncio.create_subprocess_exec(
        *command(node, target, workload, timeout=int(timeout), **options),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode not in (0, 2) or not out.strip():
        raise RuntimeError(f"the Node load generator failed: {err.decode().strip()[-500:]}")
    return check(parse(out.decode()), workload)


def _body(body: bytes) -> str:
    return base64.b64encode(body).decode()


async def publish_events(target: str, subject: str, count: int, body: bytes) -> float:
    """Concurrent PublishEvent calls from Node; events per second."""
    result = await run(
        target,
        "publish",
        events=count,
        subject=subject,
        channels=CHANNELS,
        in_flight=IN_FLIGHT,
        body_base64=_body(body),
    )
    return result.rate


async def publish_events_batched(
    target: str, subject: str, count: int, body: bytes, batch: int = BATCH
) -> float:
    """Concurrent PublishEvents calls of ``batch`` events from Node; events per second."""
    result = await run(
        target,
        "publish-batch",
        events=count,
        subject=subject,
        batch=batch,
        in_flight=BATCH_CALLS,
        body_base64=_body(body),
    )
    return result.rate


async def consume_events(
    target: str, stream: str, consumer: str, count: int, max_batch: int | None = None
) -> float:
    """One Events call from Node receiving and acking ``count`` events; events per second."""
    result = await run(
        target,
        "consume",
        events=count,
        stream=stream,
        consumers=consumer,
        max_batch=max_batch,
        max_processing=MAX_PROCESSING_EVENTS,
        ack_batch=ACK_BATCH,
    )
    return result.rate
