"""Property-based: whatever a client sends, the answer is OK or a mapped code, and the server stays up.

Hypothesis builds random and malformed requests for every RPC (bad names and
subjects, empty and huge payloads, unset oneofs, out-of-range numbers and
durations, unknown enum values and ids, raw bytes that are not a request at
all) and sends them to a serve process of this module alone (its own
nats-server, so that random streams cannot disturb other tests). Every
answer must be OK or one of the codes of the one table, never UNKNOWN or
INTERNAL; afterwards the server must still be ready, and must not have met
an exception the table does not know.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.grpc_fixtures import EventsClient, ServeProcess, http_get, serve_env, string_any
from windshift import EmbeddedNats
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2 as state_pb
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2_grpc as state_grpc
from windshift_grpc.status import STATUS_CODES
from windshift_grpc.undecodable import explain

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )

ESR = pb.EnsureStreamRequest
ALLOWED = set(STATUS_CODES.values()) | {grpc.StatusCode.OK}
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXAMPLES = 100
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
STREAM = "fuzz"  # a real stream and consumer, so that some requests get far
CONSUMER = "fuzzer"
STATE_STORE = "fuzzstore"
DEAD = "fuzzdead"  # a real dead-letter stream holding a few letters
SERVICE = "/windshift.events.v1alpha1.EventsService/"

# --- building blocks ------------------------------------------------------------

# Each value strategy mixes mostly well-formed values (so that requests get
# past validation into NATS) with malformed and out-of-range ones.
U64 = st.one_of(
    st.integers(0, 20),
    st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)
#: Subscribe.max_batch: 0 to 1000 is good; negative and above the cap are refused.
MAX_BATCH = st.one_of(
    st.integers(-2, 3), st.sampled_from([1000, 1001]), st.integers(-(2**31), 2**31 - 1)
)
U32 = st.one_of(st.integers(0, 5), st.sampled_from([2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
I64 = st.integers(-(2**63), 2**63 - 1)
I32 = st.integers(-(2**31), 2**31 - 1)
TOKEN = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
BAD_NAME = st.one_of(
    st.sampled_from(["", " ", "a.b", "a*", ">", "ü", "x" * 300, "a\nb"]), st.text(max_size=40)
)
NEW_NAME = st.one_of(TOKEN, TOKEN, BAD_NAME)  # never the module's stream or consumer
NAME = st.one_of(TOKEN, st.sampled_from([STREAM, CONSUMER]), BAD_NAME)
GOOD_SUBJECT = st.one_of(
    st.sampled_from([f"{STREAM}.a", f"{STREAM}.b.c"]),
    st.lists(TOKEN, min_size=1, max_size=3).map(lambda tokens: "s." + ".".join(tokens)),
)
FILTER = st.one_of(
    GOOD_SUBJECT,
    st.sampled_from([f"{STREAM}.>", f"{STREAM}.*", "s.>", "s.*.x"]),
)
BAD_SUBJECT = st.one_of(
    st.sampled_from(["", ".", "a..b", "a.>.b", "a b", "x" * 5000, "a\r\nb"]),
    st.text(max_size=30),
)
SUBJECT = st.one_of(GOOD_SUBJECT, FILTER, BAD_SUBJECT)
DURATION = st.one_of(
    st.none(),
    st.builds(Duration, seconds=st.integers(0, 120), nanos=st.integers(0, 999_999_999)),
    st.builds(Duration, seconds=st.integers(1, 3600)),
    st.builds(Duration, seconds=st.integers(-5, 0)),
    st.builds(Duration, seconds=I64, nanos=I32),
)
TIMESTAMP = st.one_of(
    st.builds(Timestamp, seconds=st.integers(0, 2_000_000_000), nanos=st.integers(0, 999_999_999)),
    st.builds(Timestamp, seconds=I64, nanos=I32),
)
DATA = st.one_of(
    st.just(string_any("small")),
    st.text(max_size=50).map(string_any),
    st.none(),
    st.builds(
        AnyProto,
        type_url=st.one_of(
            st.sampled_from(["", "/", "type.googleapis.com/", "x/a.B\r\nX: y", "a.b.C"]),
            st.text(max_size=60),
        ),
        value=st.one_of(st.binary(max_size=64), st.just(b""), st.just(b"\0" * (2 * 1024 * 1024))),
    ),
)


def _set_duration(message: Any, field: str, value: Duration | None) -> None:
    if value is not None:
        getattr(message, field).CopyFrom(value)


@st.composite
def pointers(draw: st.DrawFn) -> pb.StreamPointer | None:
    kind = draw(st.sampled_from(["none", "empty", "start", "end", "time", "offset"]))
    if kind == "none":
        return None
    pointer = pb.StreamPointer()
    if kind in ("start", "end"):
        setattr(pointer, kind, draw(st.booleans()))
    elif kind == "time":
        pointer.time.CopyFrom(draw(TIMESTAMP))
    elif kind == "offset":
        pointer.offset = draw(U64)
    return pointer


@st.composite
def sources(draw: st.DrawFn) -> ESR.StreamSource:
    source = ESR.StreamSource(name=draw(NAME), filter_subjects=draw(st.lists(FILTER, max_size=2)))
    if draw(st.booleans()):
        source.filter_subjects.append(draw(SUBJECT))
    pointer = draw(pointers())
    if pointer is not None:
        getattr(source, "from").CopyFrom(pointer)
    return source


@st.composite
def ensure_stream_requests(draw: st.DrawFn) -> ESR:
    request = ESR(name=draw(NEW_NAME))
    source = draw(st.sampled_from(["none", "subjects", "subjects", "mirror", "aggregate"]))
    if source == "subjects":
        request.subjects.subjects.extend(draw(st.lists(GOOD_SUBJECT, max_size=3)))
        if draw(st.booleans()):
            request.subjects.subjects.append(draw(SUBJECT))
    elif source == "mirror":
        request.mirror.CopyFrom(draw(sources()))
    elif source == "aggregate":
        request.aggregate.sources.extend(draw(st.lists(sources(), max_size=3)))
    if draw(st.booleans()):
        retention = request.retention_policy
        _set_duration(retention, "max_age", draw(DURATION))
        for field in ("max_events", "max_events_per_subject", "max_bytes"):
            if draw(st.booleans()):
                setattr(retention, field, draw(U64))
        if draw(st.booleans()):
            retention.discard_policy = draw(I32)  # type: ignore[assignment]
        if draw(st.booleans()):
            retention.discard_new_per_subject = draw(st.booleans())
    if draw(st.booleans()):
        request.storage.type = draw(st.one_of(st.sampled_from([0, 1, 2]), I32))  # type: ignore[assignment]
        if draw(st.booleans()):
            request.storage.replicas = draw(U32)
    _set_duration(request, "deduplication_window", draw(DURATION))
    if draw(st.booleans()):
        request.max_event_size = draw(U32)
    return request


@st.composite
def ensure_consumer_requests(draw: st.DrawFn) -> pb.EnsureConsumerRequest:
    request = pb.EnsureConsumerRequest(
        stream=draw(st.one_of(st.just(STREAM), NAME)),
        subjects=draw(st.lists(st.one_of(st.just(f"{STREAM}.>"), SUBJECT), max_size=3)),
    )
    if draw(st.booleans()):
        request.name = draw(NEW_NAME)
    pointer = draw(pointers())
    if pointer is not None:
        getattr(request, "from").CopyFrom(pointer)
    _set_duration(request, "processing_timeout", draw(DURATION))
    if draw(st.booleans()):
        request.max_delivery_attempts = draw(U32)
    if draw(st.booleans()):
        request.dead_letter_stream = draw(st.one_of(st.just(DEAD), NEW_NAME))
    return request


DEAD_NAME = st.one_of(st.just(DEAD), st.just(STREAM), NAME)
LETTER_ID = st.one_of(st.integers(0, 6), U64)
LIMIT = st.one_of(st.integers(0, 5), st.sampled_from([1000, 1001]), U32)
DeadLetterRequest = (
    pb.ListDeadLettersRequest
    | pb.GetDeadLetterRequest
    | pb.ReplayDeadLetterRequest
    | pb.DeleteDeadLetterRequest
    | pb.PurgeDeadLettersRequest
)


@st.composite
def dead_letter_requests(draw: st.DrawFn) -> DeadLetterRequest:
    kind = draw(st.sampled_from(["list", "list", "get", "get", "replay", "delete", "purge"]))
    stream = draw(DEAD_NAME)
    if kind == "list":
        listing = pb.ListDeadLettersRequest(dead_letter_stream=stream, after_id=draw(LETTER_ID))
        if draw(st.booleans()):
            listing.limit = draw(LIMIT)
        return listing
    if kind == "purge":
        return pb.PurgeDeadLettersRequest(dead_letter_stream=stream)
    letter_id = draw(LETTER_ID)
    if kind == "get":
        return pb.GetDeadLetterRequest(dead_letter_stream=stream, id=letter_id)
    if kind == "replay":
        return pb.ReplayDeadLetterRequest(dead_letter_stream=stream, id=letter_id)
    return pb.DeleteDeadLetterRequest(dead_letter_stream=stream, id=letter_id)


@st.composite
def publish_requests(draw: st.DrawFn) -> pb.PublishEventRequest:
    request = pb.PublishEventRequest(subject=draw(st.one_of(GOOD_SUBJECT, SUBJECT)))
    data = draw(DATA)
    if data is not None:
        request.data.CopyFrom(data)
    if draw(st.booleans()):
        request.timestamp.CopyFrom(draw(TIMESTAMP))
    if draw(st.booleans()):
        request.idempotency_key = draw(st.one_of(TOKEN, st.text(max_size=20), st.just("a\nb")))
    if draw(st.booleans()):
        request.expected_last_id = draw(U64)
    return request


@st.composite
def events_requests(draw: st.DrawFn) -> pb.EventsRequest:
    kind = draw(st.sampled_from(["empty", "subscribe", "ack", "ack", "reject", "reject", "ping"]))
    request = pb.EventsRequest()
    if kind == "subscribe":
        subscribe = request.subscribe
        subscribe.stream = draw(st.one_of(st.just(STREAM), NAME))
        subscribe.consumer = draw(st.one_of(st.just(CONSUMER), NAME))
        if draw(st.booleans()):
            subscribe.max_processing_events = draw(U64)
        if draw(st.booleans()):
            subscribe.max_batch = draw(MAX_BATCH)
    elif kind in ("ack", "ping"):
        getattr(request, kind).ids.extend(draw(st.lists(U64, max_size=5)))
    elif kind == "reject":
        request.reject.ids.extend(draw(st.lists(U64, max_size=5)))
        if draw(st.booleans()):
            request.reject.permanently = draw(st.booleans())
        _set_duration(request.reject, "delay", draw(DURATION))
    return request


def _opening(requests: list[pb.EventsRequest], max_batch: int) -> list[pb.EventsRequest]:
    """Most calls open properly, so that the later messages are read too."""
    subscribe = pb.EventsRequest(
        subscribe=pb.EventsRequest.Subscribe(stream=STREAM, consumer=CONSUMER, max_batch=max_batch)
    )
    return [subscribe, *requests]


@st.composite
def publish_events_requests(draw: st.DrawFn) -> pb.PublishEventsRequest:
    # Mostly a few events, some past the limit (1000 by default), some many
    # small ones on the module's stream.
    size = draw(st.sampled_from(["few", "few", "few", "limit", "over"]))
    if size == "few":
        events = draw(st.lists(publish_requests(), max_size=6))
    else:
        count = 1000 if size == "limit" else draw(st.integers(1001, 5000))
        events = [pb.PublishEventRequest(subject=f"{STREAM}.a") for _ in range(count)]
    return pb.PublishEventsRequest(events=events)


# --- the server of this module --------------------------------------------------


@pytest.fixture(scope="module")
async def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServeProcess]:
    store: Path = tmp_path_factory.mktemp("fuzz-nats")
    async with EmbeddedNats(store_dir=store, sync_always=False) as nats_server:
        server = ServeProcess(serve_env(nats_server.url))
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


@pytest.fixture(scope="module")
async def fuzz_channel(fuzz_server: ServeProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(fuzz_server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await stub.EnsureStream(ESR(name=STREAM, subjects=ESR.Subjects(subjects=[f"{STREAM}.>"])))
        consumer = pb.EnsureConsumerRequest(
            stream=STREAM,
            name=CONSUMER,
            subjects=[f"{STREAM}.>"],
            processing_timeout=Duration(seconds=1),
        )
        getattr(consumer, "from").start = True
        await stub.EnsureConsumer(consumer)
        for text in ("one", "two", "three"):
            await stub.PublishEvent(
                pb.PublishEventRequest(subject=f"{STREAM}.a", data=string_any(text))
            )
        await _dead_letters(stub, 3)
        yield channel


async def _dead_letters(stub: Stub, count: int) -> None:
    """Put ``count`` events of the module's stream into its dead-letter stream."""
    consumer = pb.EnsureConsumerRequest(
        stream=STREAM, name="fuzzdl", subjects=[f"{STREAM}.dead"], dead_letter_stream=DEAD
    )
    await stub.EnsureConsumer(consumer)
    for index in range(count):
        await stub.PublishEvent(
            pb.PublishEventRequest(subject=f"{STREAM}.dead", data=string_any(str(index)))
        )
    call = EventsClient(stub)
    try:
        await call.subscribe(STREAM, "fuzzdl")
        ids = [event.id for event in await call.events(count)]
        assert list((await call.reject(*ids, permanently=True)).ids) == ids
    finally:
        await call.cancel()


@pytest.fixture(scope="module")
def fuzz_stub(fuzz_channel: grpc.aio.Channel) -> Stub:
    return pb_grpc.EventsServiceStub(fuzz_channel)  # type: ignore[return-value]


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as failure:
        return failure.code()
    return grpc.StatusCode.OK


def _check(code: grpc.StatusCode, request: object) -> None:
    assert code in ALLOWED, f"{code} for {request!r:.500}"


# The Python aio client reports its *own* failed write as INTERNAL when the
# server has already ended a streaming call (e.g. INVALID_ARGUMENT after a bad
# first message) while the client was still sending. The server's answer is
# then read from its log line for the call.
_LOCAL_WRITE_FAILURE = "Internal error from Core"


async def _check_stream(
    server: ServeProcess, start: int, call: Any, request: object
) -> grpc.StatusCode:
    line = await server.wait_for_line(rf"rpc {SERVICE}Events \w+ ", after=start)
    answered = grpc.StatusCode[line.split(f"{SERVICE}Events ")[1].split()[0]]
    _check(answered, request)
    code = await call.code()
    if code == grpc.StatusCode.INTERNAL and await call.details() == _LOCAL_WRITE_FAILURE:
        return answered
    _check(code, request)
    assert code == answered
    return code


# --- the properties -------------------------------------------------------------


@FUZZ
@given(request=ensure_stream_requests())
async def test_ensure_stream_answers_with_mapped_codes(fuzz_stub: Stub, request: ESR) -> None:
    _check(await _code(fuzz_stub.EnsureStream(request, timeout=30)), request)


@FUZZ
@given(request=ensure_consumer_requests())
async def test_ensure_consumer_answers_with_mapped_codes(
    fuzz_stub: Stub, request: pb.EnsureConsumerRequest
) -> None:
    _check(await _code(fuzz_stub.EnsureConsumer(request, timeout=30)), request)


@FUZZ
@given(stream=NAME, consumer=NEW_NAME)
async def test_delete_consumer_answers_with_mapped_codes(
    fuzz_stub: Stub, stream: str, consumer: str
) -> None:
    request = pb.DeleteConsumerRequest(stream=stream, id=consumer)
    _check(await _code(fuzz_stub.DeleteConsumer(request, timeout=30)), request)


@FUZZ
@given(request=publish_requests())
async def test_publish_event_answers_with_mapped_codes(
    fuzz_stub: Stub, request: pb.PublishEventRequest
) -> None:
    _check(await _code(fuzz_stub.PublishEvent(request, timeout=30)), request)


@FUZZ
@given(request=publish_events_requests())
async def test_publish_events_answers_with_mapped_codes(
    fuzz_stub: Stub, request: pb.PublishEventsRequest
) -> None:
    try:
        response = await fuzz_stub.PublishEvents(request, timeout=30)
    except grpc.aio.AioRpcError as failure:
        _check(failure.code(), request)
        return
    # One result per event, each an id or an error with a mapped code.
    assert len(response.results) == len(request.events)
    codes = {code.value[0]: code for code in ALLOWED}
    for result in response.results:
        if result.WhichOneof("result") == "error":
            assert result.error.code in codes, result
            assert codes[result.error.code] != grpc.StatusCode.OK, result
        else:
            assert result.WhichOneof("result") == "id", result


@FUZZ
@given(request=dead_letter_requests())
async def test_dead_letter_rpcs_answer_with_mapped_codes(
    fuzz_stub: Stub, request: DeadLetterRequest
) -> None:
    method: Any = {
        pb.ListDeadLettersRequest: fuzz_stub.ListDeadLetters,
        pb.GetDeadLetterRequest: fuzz_stub.GetDeadLetter,
        pb.ReplayDeadLetterRequest: fuzz_stub.ReplayDeadLetter,
        pb.DeleteDeadLetterRequest: fuzz_stub.DeleteDeadLetter,
        pb.PurgeDeadLettersRequest: fuzz_stub.PurgeDeadLetters,
    }[type(request)]
    _check(await _code(method(request, timeout=30)), request)


@FUZZ
@given(
    requests=st.lists(events_requests(), max_size=6),
    opened=st.booleans(),
    max_batch=st.sampled_from([0, 0, 2, 50]),
)
async def test_events_answers_with_mapped_codes(
    fuzz_server: ServeProcess,
    fuzz_stub: Stub,
    requests: list[pb.EventsRequest],
    opened: bool,
    max_batch: int,
) -> None:
    sent = _opening(requests, max_batch) if opened else requests
    start = len(fuzz_server.lines)
    call = fuzz_stub.Events(iter(sent), timeout=30)  # the iterator ends: the client half-closes
    with_responses = [response async for response in _responses(call)]
    code = await _check_stream(fuzz_server, start, call, sent)
    confirmations = [
        r for r in with_responses if r.WhichOneof("response") not in ("event", "events")
    ]
    if opened and max_batch < 2:  # one event per message, as in the original
        assert not [r for r in with_responses if r.HasField("events")]
    if code == grpc.StatusCode.OK and opened:
        # One Subscribed, then one confirmation per settling request.
        assert len(confirmations) == 1 + len(requests)


async def _responses(call: Any) -> AsyncIterator[pb.EventsResponse]:
    try:
        async for response in call:
            yield response
    except grpc.aio.AioRpcError:
        return


@FUZZ
@given(
    method=st.sampled_from(list(pb.DESCRIPTOR.services_by_name["EventsService"].methods_by_name)),
    payloads=st.lists(st.binary(max_size=200), min_size=1, max_size=3),
)
async def test_bytes_that_are_no_request_are_answered_with_mapped_codes(
    fuzz_server: ServeProcess, fuzz_channel: grpc.aio.Channel, method: str, payloads: list[bytes]
) -> None:
    if method == "Events":
        start = len(fuzz_server.lines)
        call = fuzz_channel.stream_stream(SERVICE + method)(iter(payloads), timeout=30)
        async for _ in _responses(call):
            pass
        await _check_stream(fuzz_server, start, call, payloads)
    else:
        code = await _code(fuzz_channel.unary_unary(SERVICE + method)(payloads[0], timeout=30))
        _check(code, payloads)


KEY = st.one_of(
    st.lists(TOKEN, min_size=1, max_size=3).map(".".join),
    st.sampled_from(["", ".", "a..b", "a.*", "a.>", "a b", "k" * 5000, "a\r\nb"]),
    st.text(max_size=30),
)
STORE = st.one_of(st.just(STATE_STORE), TOKEN, BAD_NAME)
OPTIONAL_REVISION = st.one_of(st.none(), U64)


@st.composite
def state_requests(draw: st.DrawFn) -> object:
    kind = draw(st.sampled_from(["ensure", "get", "set", "delete"]))
    store, key = draw(STORE), draw(KEY)
    if kind == "ensure":
        return state_pb.EnsureStoreRequest(store=store)
    if kind == "get":
        return state_pb.GetRequest(store=store, key=key)
    revision = draw(OPTIONAL_REVISION)
    if kind == "delete":
        deleting = state_pb.DeleteRequest(store=store, key=key)
        if revision is not None:
            deleting.last_revision = revision
        return deleting
    setting = state_pb.SetRequest(store=store, key=key)
    value = draw(DATA)
    if value is not None:
        setting.value.CopyFrom(value)
    if draw(st.booleans()):
        setting.create_only = draw(st.booleans())
    if revision is not None:
        setting.last_revision = revision
    return setting


@FUZZ
@given(request=state_requests())
async def test_state_service_answers_with_mapped_codes(
    fuzz_channel: grpc.aio.Channel, request: object
) -> None:
    state = state_grpc.StateServiceStub(fuzz_channel)
    await state.EnsureStore(state_pb.EnsureStoreRequest(store=STATE_STORE))
    method = {
        state_pb.EnsureStoreRequest: state.EnsureStore,
        state_pb.GetRequest: state.Get,
        state_pb.SetRequest: state.Set,
        state_pb.DeleteRequest: state.Delete,
    }[type(request)]
    _check(await _code(method(request, timeout=30)), request)


# --- requests whose bytes do not decode --------------------------------------------


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(number: int, block: bytes) -> bytes:
    return _key(number, 2) + _varint(len(block)) + block


def _string_fields(descriptor: Descriptor, depth: int = 3) -> Iterator[tuple[str, list[int]]]:
    """Every string field reachable in ``descriptor``: its path and its field numbers."""
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            yield field.name, [field.number]
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type and depth > 1:
            for path, numbers in _string_fields(field.message_type, depth - 1):
                yield f"{field.name}.{path}", [field.number, *numbers]


def _nested(numbers: list[int], value: bytes) -> bytes:
    """``value`` as the string at ``numbers`` (outermost first)."""
    for number in reversed(numbers):
        value = _length_delimited(number, value)
    return value


RETENTION = ESR.DESCRIPTOR.fields_by_name["retention_policy"].number
NOT_UTF8 = b"ok\xff\xfe\xc3"  # a lone continuation byte, then a cut-short sequence
STRING_FIELDS = [
    (service, method.name, path, numbers)
    for service, module in (("EventsService", pb), ("StateService", state_pb))
    for method in module.DESCRIPTOR.services_by_name[service].methods
    for path, numbers in _string_fields(method.input_type)
]


@pytest.mark.parametrize(
    ("service", "method", "path", "numbers"),
    STRING_FIELDS,
    ids=[f"{method}.{path}" for _, method, path, _ in STRING_FIELDS],
)
async def test_a_string_field_that_is_not_utf8_is_named(
    fuzz_channel: grpc.aio.Channel,
    service: str,
    method: str,
    path: str,
    numbers: list[int],
) -> None:
    """Every string field of every request, at any depth: INVALID_ARGUMENT naming the field."""
    raw = _nested(numbers, NOT_UTF8)
    name = f"/windshift.{'events' if service == 'EventsService' else 'state'}.v1alpha1.{service}/"
    if method == "Events":
        # one message, then the end of the requests: the refusal comes after both
        call = fuzz_channel.stream_stream(name + method)(iter([raw]), timeout=30)
        async for _ in _responses(call):
            pass
        assert await call.code() == INVALID
        assert await call.details() == (
            f"{name}{method}: the request message could not be decoded: "
            f"{path} is not valid UTF-8 (bytes 6f 6b ff fe c3)"
        )
        return
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await fuzz_channel.unary_unary(name + method)(raw, timeout=30)
    assert refused.value.code() == INVALID
    assert refused.value.details() == (
        f"{name}{method}: the request message could not be decoded: "
        f"{path} is not valid UTF-8 (bytes 6f 6b ff fe c3)"
    )


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (_key(1, 2) + _varint(9) + b"ab", "name: 9 bytes announced, 2 sent"),
        (_key(1, 2) + b"\xff" * 11, "name: a number is cut short or too long"),
        (
            _length_delimited(RETENTION, _key(1, 1) + b"\x00"),
            "retention_policy.max_age: the value is cut short",
        ),
        (_key(1, 3), "name: wire type 3 is not one a request may use"),
    ],
)
async def test_a_request_cut_short_or_mis_encoded_is_explained(
    fuzz_channel: grpc.aio.Channel, raw: bytes, why: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await fuzz_channel.unary_unary(SERVICE + "EnsureStream")(raw, timeout=30)
    assert refused.value.code() == INVALID
    assert why in str(refused.value.details()), refused.value.details()


def test_the_explanation_gives_up_on_a_request_of_very_many_fields() -> None:
    # Explaining walks the bytes in Python: a request of many tiny fields is
    # left with the parser's own message rather than walked to its end.
    bad_end = _length_delimited(1, NOT_UTF8)
    tiny = _key(5, 0) + b"\x00"  # expected_last_id = 0
    publish = pb.PublishEventRequest.DESCRIPTOR
    assert (
        explain(publish, tiny * 100 + bad_end)
        == "subject is not valid UTF-8 (bytes 6f 6b ff fe c3)"
    )
    assert explain(publish, tiny * 20_000 + bad_end) is None


async def test_an_event_beyond_max_event_size_is_refused_naming_size_and_limit(
    fuzz_stub: Stub,
) -> None:
    await fuzz_stub.EnsureStream(
        ESR(name="sized", subjects=ESR.Subjects(subjects=["sized.>"]), max_event_size=1024)
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await fuzz_stub.PublishEvent(
            pb.PublishEventRequest(subject="sized.big", data=string_any("x" * 2000))
        )
    assert refused.value.code() == INVALID
    details = str(refused.value.details())
    assert re.search(r"the event is \d+ bytes with its headers", details), details
    assert "max_event_size of stream 'sized' (1024 bytes)" in details, details
    # nothing was stored; an event that fits is
    fits = await fuzz_stub.PublishEvent(
        pb.PublishEventRequest(subject="sized.small", data=string_any("x" * 100))
    )
    assert fits.id == 1


async def test_the_server_is_still_ready_and_met_no_unexpected_error(
    fuzz_server: ServeProcess, fuzz_channel: grpc.aio.Channel
) -> None:
    # Runs after the properties above (file order).
    assert fuzz_server.process is not None and fuzz_server.process.returncode is None
    assert (await http_get(fuzz_server.health_port, "/readyz"))[0] == 200
    health = health_pb2_grpc.HealthStub(fuzz_channel)
    status = (await health.Check(health_pb2.HealthCheckRequest(service=""))).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    await asyncio.sleep(0)
    unexpected = [
        line
        for line in fuzz_server.lines
        if '"windshift_grpc.status"' in line or "Traceback" in line or "encountered error" in line
    ]
    assert unexpected == []
    answered = [line for line in fuzz_server.lines if "windshift_grpc.rpc" in line]
    assert len(answered) >= 8 * EXAMPLES
