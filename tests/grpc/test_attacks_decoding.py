"""Attacks on decoding: a request is not decoded before its call is authenticated.

A protobuf message can cost far more memory decoded than its bytes: an
EnsureStreamRequest of 2 million empty aggregate sources fits in gRPC's
4 MiB limit, two bytes per source, and decoded it is 2 million message
objects (about 130 MiB of serve's memory, before anything checked the caller
when grpc decoded requests itself). Every attack here runs against a real
``windshift-grpc serve`` with a tokens file and sends no token: it must be
refused UNAUTHENTICATED, and serve's peak resident memory must stay within a
small bound of what it was (the raw bytes themselves, held by gRPC, cost a few
MiB). A well-formed request from a valid token is still decoded and answered.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.grpc_fixtures import ServeProcess, StartServe
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb

SERVICE = "/windshift.events.v1alpha1.EventsService/"
SOURCES = 2_000_000  # empty StreamSource messages: 2 bytes each on the wire
# What serve's peak resident memory may grow by while it refuses the attack:
# the request's bytes (4 MB), a copy or two of them, and the allocator's slack.
BOUND = 32 * 1024 * 1024


def _huge_ensure_stream(name: str) -> bytes:
    """An EnsureStreamRequest of :data:`SOURCES` empty aggregate sources, just under 4 MiB."""
    sources = b"\x0a\x00" * SOURCES  # StreamSources.sources (field 1), empty each
    aggregate = b"\x2a" + _varint(len(sources)) + sources  # EnsureStreamRequest.aggregate (5)
    data = pb.EnsureStreamRequest(name=name).SerializeToString() + aggregate
    assert len(data) < 4 * 1024 * 1024  # gRPC's default limit of a received message
    return data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _peak(pid: int) -> int:
    """VmHWM of a process (its peak resident memory since the last reset), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "VmHWM":
            return int(value.split()[0]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def _reset_peak(pid: int) -> None:
    """Reset VmHWM to the resident memory now (Linux ``clear_refs`` 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError as exc:
        pytest.skip(f"cannot reset the peak memory of serve here: {exc}")


@pytest.fixture
async def guarded(
    start_serve: StartServe, tmp_path: Path
) -> AsyncIterator[tuple[ServeProcess, str]]:
    """A serve with a tokens file, and a token of it that may manage the stream ``dec``."""
    token = secrets.token_urlsafe(24)
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"name": "owner", "token": token, "manage": ["dec"]}]}))
    path.chmod(0o600)
    server = await start_serve(WINDSHIFT_AUTH_FILE=str(path))
    yield server, token


async def test_an_unauthenticated_huge_ensure_stream_is_refused_before_it_is_decoded(
    guarded: tuple[ServeProcess, str],
) -> None:
    server, _ = guarded
    assert server.process is not None
    pid = server.process.pid
    data = _huge_ensure_stream("dec")
    async with grpc.aio.insecure_channel(server.target) as channel:
        ensure = channel.unary_unary(SERVICE + "EnsureStream")
        # One small refused call first: the refusal's own code paths are loaded.
        with pytest.raises(grpc.aio.AioRpcError) as first:
            await ensure(pb.EnsureStreamRequest(name="dec").SerializeToString(), timeout=30)
        assert first.value.code() == grpc.StatusCode.UNAUTHENTICATED
        _reset_peak(pid)
        before = _peak(pid)
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ensure(data, timeout=60)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value
        grown = _peak(pid) - before
    assert grown < BOUND, f"serve's peak memory grew by {grown / 2**20:.0f} MiB"


async def test_a_wrong_token_is_refused_before_decoding_too(
    guarded: tuple[ServeProcess, str],
) -> None:
    server, _ = guarded
    assert server.process is not None
    pid = server.process.pid
    data = _huge_ensure_stream("dec")
    metadata = [("authorization", f"Bearer {secrets.token_urlsafe(24)}")]
    async with grpc.aio.insecure_channel(server.target) as channel:
        ensure = channel.unary_unary(SERVICE + "EnsureStream")
        with pytest.raises(grpc.aio.AioRpcError):
            await ensure(b"", metadata=metadata, timeout=30)
        _reset_peak(pid)
        before = _peak(pid)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ensure(data, metadata=metadata, timeout=60)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        grown = _peak(pid) - before
    assert grown < BOUND, f"serve's peak memory grew by {grown / 2**20:.0f} MiB"


async def test_a_valid_token_still_gets_its_request_decoded_and_checked(
    guarded: tuple[ServeProcess, str],
) -> None:
    server, token = guarded
    metadata = [("authorization", f"Bearer {token}")]
    async with grpc.aio.insecure_channel(server.target) as channel:
        ensure = channel.unary_unary(SERVICE + "EnsureStream")
        # Decoded after authentication, then authorized: its sources are streams
        # (named '') the token may not consume.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ensure(_huge_ensure_stream("dec"), metadata=metadata, timeout=60)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert refused.value.details() == "token 'owner' may not consume stream ''"
        # Undecodable bytes from a valid token: INVALID_ARGUMENT naming the field.
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await ensure(b"\x0a\x05ok\xff\xfe\xc3", metadata=metadata, timeout=30)
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "could not be decoded" in (malformed.value.details() or "")
