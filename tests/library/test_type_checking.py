"""Type checkers see windshift's types through the documented editable install.

docs/getting-started.md installs the checkout editable (``pip install -e``;
``make`` does the same with uv). hatchling's editable install is a ``.pth``
path entry, which mypy follows. A user's script in a directory outside the
checkout (so neither the working directory nor the project's mypy settings
help) must pass ``mypy --strict``, and a second one with wrong calls must be
reported: windshift's types are seen, not ``Any``. The gRPC messages are
checked through their public path, ``windshift_grpc.proto``.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MYPY = Path(sys.executable).parent / "mypy"
TIMEOUT = 120  # seconds for one mypy run (the first one fills its cache)

USER_SCRIPT = '''\
"""Publish an order and read it back: what a user of windshift writes."""

import asyncio
from datetime import timedelta

from google.protobuf.wrappers_pb2 import StringValue

import windshift
from windshift import ConsumerInfo, Event, PublishedEvent, StreamInfo, StreamPointer
from windshift_grpc.proto import events_pb2, state_pb2


async def main(url: str) -> list[int]:
    async with windshift.connect(url) as client:
        stream: StreamInfo = await client.ensure_stream(
            "orders", subjects=["orders.>"], max_age=timedelta(days=1)
        )
        consumer: ConsumerInfo = await client.ensure_consumer(
            stream.name, "printer", start=StreamPointer.start()
        )
        published: PublishedEvent = await client.publish(
            "orders.created", StringValue(value="hello"), idempotency_key="order-1"
        )
        ids = [published.id]
        async with client.subscribe("orders", consumer.id) as events:
            async for event in events:
                received: Event = event
                print(received.unpack(StringValue).value)
                await received.ack()
                ids.append(received.id)
                break
        return ids


def requests() -> tuple[events_pb2.PublishEventRequest, state_pb2.GetRequest]:
    return events_pb2.PublishEventRequest(subject="orders.created"), state_pb2.GetRequest()


if __name__ == "__main__":
    print(asyncio.run(main("nats://127.0.0.1:4222")))
'''

WRONG_SCRIPT = """\
import windshift
from windshift_grpc.proto import events_pb2


async def main(url: str) -> None:
    async with windshift.connect(url) as client:
        await client.publish("orders.created", "not a protobuf message")
        name: int = (await client.stream_info("orders")).name
        client.no_such_method()


events_pb2.PublishEventRequest(subject=42)
"""
# Each wrong line, and what mypy must say about it (a regular expression: the
# class that defines publish is an implementation detail).
WRONG = {
    7: r'Argument 2 to "publish" of "\w+" has incompatible type "str"; expected "Message( \| BaseModel)?"',
    8: r'Incompatible types in assignment \(expression has type "str", variable has type "int"\)',
    9: r'"Client" has no attribute "no_such_method"',
    12: r'Argument "subject" to "PublishEventRequest" has incompatible type "int"; expected "str"',
}


def mypy_strict(script: Path) -> subprocess.CompletedProcess[str]:
    """``mypy --strict script`` from the script's directory, as the user would run it."""
    return subprocess.run(
        [str(MYPY), "--strict", "--no-error-summary", script.name],
        cwd=script.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("user")
    assert not home.is_relative_to(ROOT)
    return home


def test_windshift_is_installed_editable() -> None:
    direct_url = importlib.metadata.distribution("windshift").read_text("direct_url.json")
    assert direct_url is not None
    origin = json.loads(direct_url)
    assert origin["dir_info"].get("editable") is True
    assert origin["url"] == ROOT.as_uri()


def test_a_user_script_passes_mypy_strict(user_dir: Path) -> None:
    script = user_dir / "orders.py"
    script.write_text(USER_SCRIPT)

    checked = mypy_strict(script)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout == ""


def test_wrong_calls_are_reported_with_windshifts_types(user_dir: Path) -> None:
    script = user_dir / "wrong.py"
    script.write_text(WRONG_SCRIPT)

    checked = mypy_strict(script)

    assert checked.returncode == 1, checked.stdout + checked.stderr
    errors = [line for line in checked.stdout.splitlines() if ": error: " in line]
    assert len(errors) == len(WRONG), checked.stdout
    for line, message in WRONG.items():
        expected = re.compile(rf"wrong\.py:{line}: error: {message}  \[[a-z-]+\]$")
        assert any(expected.match(error) for error in errors), (
            f"line {line}: expected {message!r}, got:\n{checked.stdout}"
        )
