"""The gRPC client examples run against a live serve process, as documented.

``examples/grpc_client.py`` (Python stubs) and ``examples/node-client``
(@grpc/grpc-js with @grpc/proto-loader reading ``proto/``) each ensure a
stream and a consumer, publish (one event with PublishEvent, two with
PublishEvents), consume with ``max_batch`` and acknowledge, and must exit 0.
The Node.js one is skipped only where ``node`` is not installed; its
dependencies are installed here (``npm ci``) when ``node_modules`` is missing.
"""

from __future__ import annotations

import re
import shutil
import sys

import pytest

from tests._util import run_command
from tests.grpc_fixtures import ROOT, ServeProcess

NODE_CLIENT = ROOT / "examples" / "node-client"
RUN_TIMEOUT = 60.0
INSTALL_TIMEOUT = 300.0


async def _run(*command: str, cwd: str, timeout: float = RUN_TIMEOUT) -> tuple[int, str, str]:
    return await run_command(*command, cwd=cwd, timeout=timeout)


def _check_output(out: str, consumer: str) -> None:
    assert f"consumer {consumer} are ready" in out
    published = {int(i) for i in re.findall(r"^published event (\d+)$", out, re.MULTILINE)}
    received = {
        int(i)
        for i in re.findall(
            r"^received event (\d+) on greetings\.hello \(delivery attempt \d+\): hello #\d",
            out,
            re.MULTILINE,
        )
    }
    acknowledged = {int(i) for i in re.findall(r"^acknowledged event (\d+)$", out, re.MULTILINE)}
    assert len(published) == 3
    assert published <= received <= acknowledged
    assert "published 2 events in one PublishEvents call" in out
    assert "refused" not in out
    # With max_batch every event comes in a batch (of one or more), never alone:
    # the batches account for every event received.
    batches = [int(n) for n in re.findall(r"^received a batch of (\d+) event", out, re.MULTILINE)]
    received_lines = re.findall(r"^received event ", out, re.MULTILINE)
    assert batches and sum(batches) == len(received_lines)
    assert out.rstrip().endswith("all events acknowledged")


async def test_python_grpc_client_example(grpc_server: ServeProcess) -> None:
    code, out, err = await _run(
        sys.executable, "examples/grpc_client.py", "--target", grpc_server.target, cwd=str(ROOT)
    )
    assert code == 0, err
    _check_output(out, "python-greeter")


async def test_node_client_example(grpc_server: ServeProcess) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node.js client example cannot run")
    if not (NODE_CLIENT / "node_modules").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "node is installed but npm is not"
        code, _, err = await _run(
            npm, "ci", "--no-audit", "--no-fund", cwd=str(NODE_CLIENT), timeout=INSTALL_TIMEOUT
        )
        assert code == 0, f"npm ci failed: {err}"
    code, out, err = await _run(
        node, "index.js", "--target", grpc_server.target, cwd=str(NODE_CLIENT)
    )
    assert code == 0, err
    _check_output(out, "node-greeter")
