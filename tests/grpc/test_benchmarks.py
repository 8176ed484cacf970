"""The benchmark tools work and count right (tiny counts: nothing here is timed).

``benchmarks/node/loadgen.js`` (the Node.js @grpc/grpc-js load generator)
runs each of its workloads against a live serve and reports exactly what the
stream and the consumers show; it reports a failed publish as an error (exit
status 2), never as an event. ``benchmarks/grpc_scaling.py`` runs serve with
2 workers and Node clients, and with 1 worker and Python clients, on a shared
and on an embedded nats-server, and reports every event it sent.
``benchmarks/settle_many.py`` acknowledges every event it received, both ways;
``benchmarks/grpc_floor.py`` measures every part it compares (it checks the counts itself).
The Node parts are skipped only where ``node`` is not installed; the load
generator's packages are installed (``npm ci``) when ``node_modules`` is missing.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests._util import run_command
from tests.grpc_fixtures import ROOT, ServeProcess
from windshift import EmbeddedNats, OutgoingEvent, StreamPointer

LOADGEN_DIR = ROOT / "benchmarks" / "node"
SCALING = ROOT / "benchmarks" / "grpc_scaling.py"
TIMEOUT = 120.0
INSTALL_TIMEOUT = 300.0


async def _run(*command: str, cwd: Path = ROOT, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    return await run_command(*command, cwd=cwd, timeout=timeout)


@pytest.fixture
async def node() -> str:
    """``node``, with the load generator's packages installed; skips where node is missing."""
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed: the Node.js load generator cannot run")
    if not (LOADGEN_DIR / "node_modules").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "node is installed but npm is not"
        code, _, err = await _run(
            npm, "ci", "--no-audit", "--no-fund", cwd=LOADGEN_DIR, timeout=INSTALL_TIMEOUT
        )
        assert code == 0, f"npm ci failed: {err}"
    return found


async def _loadgen(node: str, target: str, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = await _run(node, "loadgen.js", "--target", target, *args, cwd=LOADGEN_DIR)
    assert out.strip(), err
    return code, json.loads(out.strip().splitlines()[-1])


async def test_node_load_generator_publishes_what_the_stream_holds(
    node: str, grpc_server: ServeProcess, client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    code, one = await _loadgen(
        node, grpc_server.target, "--workload", "publish", "--events", "57", "--subject",
        f"{name}.one", "--in-flight", "8",
    )  # fmt: skip
    assert code == 0, one
    assert (one["events"], one["expected"], one["errors"]) == (57, 57, 0)
    assert one["seconds"] > 0
    # 250 events in calls of 100: 100, 100 and 50.
    code, batched = await _loadgen(
        node, grpc_server.target, "--workload", "publish-batch", "--events", "250", "--subject",
        f"{name}.many", "--batch", "100",
    )  # fmt: skip
    assert code == 0, batched
    assert (batched["events"], batched["errors"]) == (250, 0)
    info = await client.stream_info(name)
    assert (info.events, info.first_id, info.last_id) == (307, 1, 307)


@pytest.mark.parametrize("max_batch", [0, 20])
async def test_node_load_generator_consumes_and_acks_every_event(
    node: str, grpc_server: ServeProcess, client: windshift.Client, name: str, max_batch: int
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    for part in ("a", "b"):
        event = OutgoingEvent(f"{name}.{part}", StringValue(value=part))
        results = await client.publish_many([event] * 90)
        assert not [result for result in results if isinstance(result, Exception)]
        await client.ensure_consumer(
            name, part, subjects=[f"{name}.{part}"], start=StreamPointer.start()
        )
    code, result = await _loadgen(
        node, grpc_server.target, "--workload", "consume", "--stream", name, "--consumers",
        "a,b", "--events", "90", "--max-batch", str(max_batch), "--ack-batch", "16",
        "--max-processing", "32",
    )  # fmt: skip
    assert code == 0, result
    assert (result["events"], result["expected"], result["errors"]) == (180, 180, 0)
    assert (result["received"], result["acked"]) == (180, 180)
    for part in ("a", "b"):
        info = await client.consumer_info(name, part)
        assert (info.pending_events, info.unsettled_events) == (0, 0)
        assert info.acknowledged_id == info.delivered_id > 0


async def test_node_load_generator_reports_a_refused_publish_as_an_error(
    node: str, grpc_server: ServeProcess, name: str
) -> None:
    # No stream takes this subject: every call fails, and none counts as an event.
    code, result = await _loadgen(
        node, grpc_server.target, "--workload", "publish", "--events", "5", "--subject",
        f"{name}.nowhere", "--in-flight", "2",
    )  # fmt: skip
    assert code == 2
    assert (result["events"], result["expected"], result["errors"]) == (0, 5, 5)
    assert result["first_error"]


def _rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(path.read_text())["rows"]
    return rows


async def test_scaling_run_with_two_workers_reports_every_event(
    node: str, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    out = tmp_path / "node.json"
    code, stdout, err = await _run(
        sys.executable, str(SCALING), "--workers", "2", "--events", "60", "--client", "node",
        "--workloads", "publish-batch,consume", "--nats-url", nats_server.url, "--quiet",
        "--json", str(out),
    )  # fmt: skip
    assert code == 0, err
    rows = _rows(out)
    assert [(row["workers"], row["clients"], row["workload"]) for row in rows] == [
        (2, 2, "publish-batch"),
        (2, 2, "consume"),
    ]
    assert all(row["events"] == 60 and row["server_cpu_s"] >= 0 for row in rows)
    # (A shared nats-server without --nats-pid: its CPU is not guessed.)
    assert all(row["nats_cpu_s"] is None for row in rows)
    assert "| 2 | 2 | consume |" in stdout


async def test_scaling_run_with_python_clients_and_an_embedded_nats(tmp_path: Path) -> None:
    out = tmp_path / "python.json"
    code, _, err = await _run(
        sys.executable, str(SCALING), "--workers", "1", "--clients", "2", "--events", "31",
        "--client", "python", "--workloads", "publish,consume-batch", "--quiet",
        "--json", str(out),
    )  # fmt: skip
    assert code == 0, err
    rows = _rows(out)
    assert [(row["workers"], row["clients"], row["workload"], row["events"]) for row in rows] == [
        (1, 2, "publish", 31),
        (1, 2, "consume-batch", 31),
    ]
    # The embedded nats-server's CPU is found and reported on its own.
    assert all(row["nats_cpu_s"] is not None for row in rows)


async def test_settle_many_benchmark_acknowledges_every_event_both_ways() -> None:
    script = ROOT / "benchmarks" / "settle_many.py"
    code, out, err = await _run(
        sys.executable, str(script), "--events", "300", "--batch", "64", "--rounds", "1"
    )
    assert code == 0, err
    assert "| gather |" in out and "| ack_many |" in out, out
    assert "ack_many/gather:" in out


async def test_floor_benchmark_reports_every_part_and_the_floor() -> None:
    script = ROOT / "benchmarks" / "grpc_floor.py"
    code, out, err = await _run(
        sys.executable, str(script), "--calls", "100", "--events", "300", "--rounds", "1"
    )
    assert code == 0, err
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:5]]
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| way")
    }
    assert set(rows) == {
        "serve",
        "no-op",
        "library publish",
        "library consume + ack",
        "library + ack_many confirmed",
        "serve max_batch",
    }, out
    for way, (rate, cpu, _) in rows.items():
        assert float(rate.replace(",", "")) > 0 and float(cpu) > 0, (way, out)
    assert "floor (no-op + library publish)/no-op" in out
    assert "serve max_batch/library consume + ack" in out
