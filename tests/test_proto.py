"""The gRPC façade's generated code: up to date, and wire-compatible with the Go service.

The expected tables below are transcribed from the original service's
definitions (LevelFourAB/windshift-service, proto/windshift/*/v1alpha1). They
pin every field number, type, label, `optional` and oneof, so that an edit of
our .proto that would break clients generated from the original fails here.
"""

from __future__ import annotations

import types
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import Message

from windshift_grpc._proto import generate
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as events_pb2
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as events_grpc
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2 as state_pb2
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2_grpc as state_grpc

FieldRow = tuple[int, str, str, str, str]
"""number, type, message/enum type name, label, and "" | "optional" | "oneof <name>"."""

_EV = ".windshift.events.v1alpha1."
_ESR = _EV + "EnsureStreamRequest."
_DURATION = ".google.protobuf.Duration"
_TIMESTAMP = ".google.protobuf.Timestamp"
_ANY = ".google.protobuf.Any"

EXPECTED_EVENTS_FIELDS: dict[str, FieldRow] = {
    "EnsureStreamRequest.name": (1, "string", "", "optional", ""),
    "EnsureStreamRequest.retention_policy": (
        2,
        "message",
        _ESR + "RetentionPolicy",
        "optional",
        "optional",
    ),
    "EnsureStreamRequest.subjects": (3, "message", _ESR + "Subjects", "optional", "oneof source"),
    "EnsureStreamRequest.mirror": (4, "message", _ESR + "StreamSource", "optional", "oneof source"),
    "EnsureStreamRequest.aggregate": (
        5,
        "message",
        _ESR + "StreamSources",
        "optional",
        "oneof source",
    ),
    "EnsureStreamRequest.storage": (6, "message", _ESR + "Storage", "optional", "optional"),
    "EnsureStreamRequest.deduplication_window": (7, "message", _DURATION, "optional", "optional"),
    "EnsureStreamRequest.max_event_size": (8, "uint32", "", "optional", "optional"),
    "EnsureStreamRequest.RetentionPolicy.max_age": (
        1,
        "message",
        _DURATION,
        "optional",
        "optional",
    ),
    "EnsureStreamRequest.RetentionPolicy.max_events": (2, "uint64", "", "optional", "optional"),
    "EnsureStreamRequest.RetentionPolicy.max_events_per_subject": (
        3,
        "uint64",
        "",
        "optional",
        "optional",
    ),
    "EnsureStreamRequest.RetentionPolicy.max_bytes": (4, "uint64", "", "optional", "optional"),
    "EnsureStreamRequest.RetentionPolicy.discard_policy": (
        5,
        "enum",
        _ESR + "DiscardPolicy",
        "optional",
        "optional",
    ),
    "EnsureStreamRequest.RetentionPolicy.discard_new_per_subject": (
        6,
        "bool",
        "",
        "optional",
        "optional",
    ),
    "EnsureStreamRequest.Subjects.subjects": (1, "string", "", "repeated", ""),
    "EnsureStreamRequest.StreamSource.name": (1, "string", "", "optional", ""),
    "EnsureStreamRequest.StreamSource.from": (
        2,
        "message",
        _EV + "StreamPointer",
        "optional",
        "optional",
    ),
    "EnsureStreamRequest.StreamSource.filter_subjects": (3, "string", "", "repeated", ""),
    "EnsureStreamRequest.StreamSources.sources": (
        1,
        "message",
        _ESR + "StreamSource",
        "repeated",
        "",
    ),
    "EnsureStreamRequest.Storage.type": (1, "enum", _ESR + "StorageType", "optional", "optional"),
    "EnsureStreamRequest.Storage.replicas": (2, "uint32", "", "optional", "optional"),
    "EnsureConsumerRequest.stream": (1, "string", "", "optional", ""),
    "EnsureConsumerRequest.name": (2, "string", "", "optional", "optional"),
    "EnsureConsumerRequest.subjects": (3, "string", "", "repeated", ""),
    "EnsureConsumerRequest.from": (4, "message", _EV + "StreamPointer", "optional", "optional"),
    "EnsureConsumerRequest.processing_timeout": (5, "message", _DURATION, "optional", "optional"),
    "EnsureConsumerResponse.id": (1, "string", "", "optional", ""),
    "DeleteConsumerRequest.stream": (1, "string", "", "optional", ""),
    "DeleteConsumerRequest.id": (2, "string", "", "optional", ""),
    "PublishEventRequest.subject": (1, "string", "", "optional", ""),
    "PublishEventRequest.data": (2, "message", _ANY, "optional", ""),
    "PublishEventRequest.timestamp": (3, "message", _TIMESTAMP, "optional", "optional"),
    "PublishEventRequest.idempotency_key": (4, "string", "", "optional", "optional"),
    "PublishEventRequest.expected_last_id": (5, "uint64", "", "optional", "optional"),
    "PublishEventResponse.id": (1, "uint64", "", "optional", ""),
    "EventsRequest.subscribe": (
        1,
        "message",
        _EV + "EventsRequest.Subscribe",
        "optional",
        "oneof request",
    ),
    "EventsRequest.ack": (2, "message", _EV + "EventsRequest.Ack", "optional", "oneof request"),
    "EventsRequest.reject": (
        3,
        "message",
        _EV + "EventsRequest.Reject",
        "optional",
        "oneof request",
    ),
    "EventsRequest.ping": (4, "message", _EV + "EventsRequest.Ping", "optional", "oneof request"),
    "EventsRequest.Subscribe.stream": (1, "string", "", "optional", ""),
    "EventsRequest.Subscribe.consumer": (2, "string", "", "optional", ""),
    "EventsRequest.Subscribe.max_processing_events": (4, "uint64", "", "optional", "optional"),
    "EventsRequest.Ack.ids": (1, "uint64", "", "repeated", ""),
    "EventsRequest.Reject.ids": (1, "uint64", "", "repeated", ""),
    "EventsRequest.Reject.permanently": (2, "bool", "", "optional", "optional"),
    "EventsRequest.Reject.delay": (3, "message", _DURATION, "optional", "optional"),
    "EventsRequest.Ping.ids": (1, "uint64", "", "repeated", ""),
    "EventsResponse.event": (1, "message", _EV + "Event", "optional", "oneof response"),
    "EventsResponse.subscribed": (
        2,
        "message",
        _EV + "EventsResponse.Subscribed",
        "optional",
        "oneof response",
    ),
    "EventsResponse.ack_confirmation": (
        3,
        "message",
        _EV + "EventsResponse.AckConfirmation",
        "optional",
        "oneof response",
    ),
    "EventsResponse.reject_confirmation": (
        4,
        "message",
        _EV + "EventsResponse.RejectConfirmation",
        "optional",
        "oneof response",
    ),
    "EventsResponse.ping_confirmation": (
        5,
        "message",
        _EV + "EventsResponse.PingConfirmation",
        "optional",
        "oneof response",
    ),
    "EventsResponse.Subscribed.processing_timeout": (1, "message", _DURATION, "optional", ""),
    "EventsResponse.AckConfirmation.ids": (1, "uint64", "", "repeated", ""),
    "EventsResponse.AckConfirmation.invalid_ids": (2, "uint64", "", "repeated", ""),
    "EventsResponse.AckConfirmation.temporary_failed_ids": (3, "uint64", "", "repeated", ""),
    "EventsResponse.RejectConfirmation.ids": (1, "uint64", "", "repeated", ""),
    "EventsResponse.RejectConfirmation.invalid_ids": (2, "uint64", "", "repeated", ""),
    "EventsResponse.RejectConfirmation.temporary_failed_ids": (3, "uint64", "", "repeated", ""),
    "EventsResponse.PingConfirmation.ids": (1, "uint64", "", "repeated", ""),
    "EventsResponse.PingConfirmation.invalid_ids": (2, "uint64", "", "repeated", ""),
    "EventsResponse.PingConfirmation.temporary_failed_ids": (3, "uint64", "", "repeated", ""),
    "StreamPointer.start": (1, "bool", "", "optional", "oneof pointer"),
    "StreamPointer.end": (2, "bool", "", "optional", "oneof pointer"),
    "StreamPointer.time": (3, "message", _TIMESTAMP, "optional", "oneof pointer"),
    "StreamPointer.offset": (5, "uint64", "", "optional", "oneof pointer"),
    "Event.id": (1, "uint64", "", "optional", ""),
    "Event.subject": (2, "string", "", "optional", ""),
    "Event.headers": (3, "message", _EV + "Headers", "optional", ""),
    "Event.data": (4, "message", _ANY, "optional", ""),
    "Event.delivery_attempt": (5, "uint64", "", "optional", ""),
    "Headers.timestamp": (1, "message", _TIMESTAMP, "optional", ""),
    "Headers.idempotency_key": (2, "string", "", "optional", "optional"),
    "Headers.trace_parent": (3, "string", "", "optional", "optional"),
    "Headers.trace_state": (4, "string", "", "optional", "optional"),
}

EXPECTED_EVENTS_ENUMS = {
    "EnsureStreamRequest.DiscardPolicy": {
        "DISCARD_POLICY_UNSPECIFIED": 0,
        "DISCARD_POLICY_OLD": 1,
        "DISCARD_POLICY_NEW": 2,
    },
    "EnsureStreamRequest.StorageType": {
        "STORAGE_TYPE_UNSPECIFIED": 0,
        "STORAGE_TYPE_FILE": 1,
        "STORAGE_TYPE_MEMORY": 2,
    },
}

EXPECTED_STATE_FIELDS: dict[str, FieldRow] = {
    "EnsureStoreRequest.store": (1, "string", "", "optional", ""),
    "GetRequest.store": (1, "string", "", "optional", ""),
    "GetRequest.key": (2, "string", "", "optional", ""),
    "GetResponse.last_updated": (1, "message", _TIMESTAMP, "optional", "optional"),
    "GetResponse.revision": (2, "uint64", "", "optional", ""),
    "GetResponse.value": (3, "message", _ANY, "optional", "optional"),
    "SetRequest.store": (1, "string", "", "optional", ""),
    "SetRequest.key": (2, "string", "", "optional", ""),
    "SetRequest.value": (3, "message", _ANY, "optional", ""),
    "SetRequest.create_only": (4, "bool", "", "optional", "optional"),
    "SetRequest.last_revision": (5, "uint64", "", "optional", "optional"),
    "SetResponse.revision": (1, "uint64", "", "optional", ""),
    "DeleteRequest.store": (1, "string", "", "optional", ""),
    "DeleteRequest.key": (2, "string", "", "optional", ""),
    "DeleteRequest.last_revision": (3, "uint64", "", "optional", "optional"),
}

# Messages without fields do not show up in the field tables.
EXPECTED_EVENTS_MESSAGES = {
    "EnsureStreamRequest",
    "EnsureStreamRequest.RetentionPolicy",
    "EnsureStreamRequest.Subjects",
    "EnsureStreamRequest.StreamSource",
    "EnsureStreamRequest.StreamSources",
    "EnsureStreamRequest.Storage",
    "EnsureStreamResponse",
    "EnsureConsumerRequest",
    "EnsureConsumerResponse",
    "DeleteConsumerRequest",
    "DeleteConsumerResponse",
    "PublishEventRequest",
    "PublishEventResponse",
    "EventsRequest",
    "EventsRequest.Subscribe",
    "EventsRequest.Ack",
    "EventsRequest.Reject",
    "EventsRequest.Ping",
    "EventsResponse",
    "EventsResponse.Subscribed",
    "EventsResponse.AckConfirmation",
    "EventsResponse.RejectConfirmation",
    "EventsResponse.PingConfirmation",
    "StreamPointer",
    "Event",
    "Headers",
}
EXPECTED_STATE_MESSAGES = {
    "EnsureStoreRequest",
    "EnsureStoreResponse",
    "GetRequest",
    "GetResponse",
    "SetRequest",
    "SetResponse",
    "DeleteRequest",
    "DeleteResponse",
}

# method name -> (request, response, client streaming, server streaming)
EXPECTED_EVENTS_METHODS = {
    "EnsureStream": ("EnsureStreamRequest", "EnsureStreamResponse", False, False),
    "EnsureConsumer": ("EnsureConsumerRequest", "EnsureConsumerResponse", False, False),
    "DeleteConsumer": ("DeleteConsumerRequest", "DeleteConsumerResponse", False, False),
    "PublishEvent": ("PublishEventRequest", "PublishEventResponse", False, False),
    "Events": ("EventsRequest", "EventsResponse", True, True),
}
EXPECTED_STATE_METHODS = {
    "EnsureStore": ("EnsureStoreRequest", "EnsureStoreResponse", False, False),
    "Get": ("GetRequest", "GetResponse", False, False),
    "Set": ("SetRequest", "SetResponse", False, False),
    "Delete": ("DeleteRequest", "DeleteResponse", False, False),
}

_TYPE_NAMES = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()
}
_LABEL_NAMES = {
    value: name.removeprefix("LABEL_").lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Label.items()
}


def _file_proto(module: ModuleType) -> descriptor_pb2.FileDescriptorProto:
    file_proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(file_proto)
    return file_proto


def _walk(
    messages: list[descriptor_pb2.DescriptorProto], prefix: str = ""
) -> list[tuple[str, descriptor_pb2.DescriptorProto]]:
    found: list[tuple[str, descriptor_pb2.DescriptorProto]] = []
    for message in messages:
        path = prefix + message.name
        found.append((path, message))
        found.extend(_walk(list(message.nested_type), path + "."))
    return found


def _field_table(module: ModuleType) -> dict[str, FieldRow]:
    table: dict[str, FieldRow] = {}
    for path, message in _walk(list(_file_proto(module).message_type)):
        for field in message.field:
            if field.proto3_optional:
                kind = "optional"
            elif field.HasField("oneof_index"):
                kind = "oneof " + message.oneof_decl[field.oneof_index].name
            else:
                kind = ""
            table[f"{path}.{field.name}"] = (
                field.number,
                _TYPE_NAMES[field.type],
                field.type_name,
                _LABEL_NAMES[field.label],
                kind,
            )
    return table


def _methods(module: ModuleType, service: str) -> dict[str, tuple[str, str, bool, bool]]:
    file_proto = _file_proto(module)
    prefix = f".{file_proto.package}."
    (service_proto,) = [s for s in file_proto.service if s.name == service]
    return {
        method.name: (
            method.input_type.removeprefix(prefix),
            method.output_type.removeprefix(prefix),
            method.client_streaming,
            method.server_streaming,
        )
        for method in service_proto.method
    }


def test_generated_code_matches_the_proto_sources() -> None:
    problems = generate.check()
    assert problems == [], (
        "windshift_grpc/_proto is out of date; run `python -m windshift_grpc._proto.generate`"
        f" ({generate.tool_versions()}):\n" + "\n".join(problems)
    )


@pytest.mark.parametrize(
    ("module", "file_name", "package", "dependencies"),
    [
        (
            events_pb2,
            "windshift/events/v1alpha1/service.proto",
            "windshift.events.v1alpha1",
            [
                "google/protobuf/any.proto",
                "google/protobuf/timestamp.proto",
                "google/protobuf/duration.proto",
            ],
        ),
        (
            state_pb2,
            "windshift/state/v1alpha1/service.proto",
            "windshift.state.v1alpha1",
            ["google/protobuf/any.proto", "google/protobuf/timestamp.proto"],
        ),
    ],
)
def test_files_keep_the_original_names(
    module: ModuleType, file_name: str, package: str, dependencies: list[str]
) -> None:
    file_proto = _file_proto(module)
    assert file_proto.name == file_name
    assert file_proto.package == package
    assert file_proto.syntax == "proto3"
    assert list(file_proto.dependency) == dependencies
    assert descriptor_pool.Default().FindFileByName(file_name) is module.DESCRIPTOR


def test_events_service_descriptor() -> None:
    service = events_pb2.DESCRIPTOR.services_by_name["EventsService"]
    assert service.full_name == "windshift.events.v1alpha1.EventsService"
    assert _methods(events_pb2, "EventsService") == EXPECTED_EVENTS_METHODS
    assert [method.name for method in service.methods] == list(EXPECTED_EVENTS_METHODS)


def test_state_service_descriptor() -> None:
    service = state_pb2.DESCRIPTOR.services_by_name["StateService"]
    assert service.full_name == "windshift.state.v1alpha1.StateService"
    assert _methods(state_pb2, "StateService") == EXPECTED_STATE_METHODS
    assert [method.name for method in service.methods] == list(EXPECTED_STATE_METHODS)


def test_events_messages_and_fields_match_the_original() -> None:
    assert {path for path, _ in _walk(list(_file_proto(events_pb2).message_type))} == (
        EXPECTED_EVENTS_MESSAGES
    )
    assert _field_table(events_pb2) == EXPECTED_EVENTS_FIELDS
    enums = {
        f"{path}.{enum.name}": {value.name: value.number for value in enum.value}
        for path, message in _walk(list(_file_proto(events_pb2).message_type))
        for enum in message.enum_type
    }
    assert enums == EXPECTED_EVENTS_ENUMS
    assert not _file_proto(events_pb2).enum_type


def test_state_messages_and_fields_match_the_original() -> None:
    assert {path for path, _ in _walk(list(_file_proto(state_pb2).message_type))} == (
        EXPECTED_STATE_MESSAGES
    )
    assert _field_table(state_pb2) == EXPECTED_STATE_FIELDS
    assert not _file_proto(state_pb2).enum_type


def test_full_names_in_the_descriptor_pool() -> None:
    pool = descriptor_pool.Default()
    assert pool.FindMessageTypeByName("windshift.events.v1alpha1.Event") is (
        events_pb2.Event.DESCRIPTOR
    )
    assert pool.FindMessageTypeByName("windshift.events.v1alpha1.EventsRequest.Reject") is (
        events_pb2.EventsRequest.Reject.DESCRIPTOR
    )
    assert pool.FindMessageTypeByName("windshift.state.v1alpha1.SetRequest") is (
        state_pb2.SetRequest.DESCRIPTOR
    )


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # subject=1 (len), data=2 (len), timestamp=3, idempotency_key=4, expected_last_id=5
        (
            events_pb2.PublishEventRequest(
                subject="a.b",
                idempotency_key="k",
                expected_last_id=7,
            ),
            b"\x0a\x03a.b" + b"\x22\x01k" + b"\x28\x07",
        ),
        # id=1, subject=2, delivery_attempt=5
        (
            events_pb2.Event(id=300, subject="s", delivery_attempt=2),
            b"\x08\xac\x02" + b"\x12\x01s" + b"\x28\x02",
        ),
        # StreamPointer.offset is field 5 (4 is unused)
        (events_pb2.StreamPointer(offset=9), b"\x28\x09"),
        (events_pb2.StreamPointer(end=True), b"\x10\x01"),
        # EventsRequest.ack=2 { ids=1 packed }
        (
            events_pb2.EventsRequest(ack=events_pb2.EventsRequest.Ack(ids=[1, 2])),
            b"\x12\x04" + b"\x0a\x02\x01\x02",
        ),
        # EventsRequest.subscribe=1 { stream=1, consumer=2, max_processing_events=4 }
        (
            events_pb2.EventsRequest(
                subscribe=events_pb2.EventsRequest.Subscribe(
                    stream="s", consumer="c", max_processing_events=10
                )
            ),
            b"\x0a\x08" + b"\x0a\x01s" + b"\x12\x01c" + b"\x20\x0a",
        ),
        # An explicitly set proto3 optional is sent even when it holds the default.
        (
            events_pb2.EventsRequest.Reject(ids=[3], permanently=False),
            b"\x0a\x01\x03" + b"\x10\x00",
        ),
        # EventsResponse.ping_confirmation=5 { ids=1, invalid_ids=2, temporary_failed_ids=3 }
        (
            events_pb2.EventsResponse(
                ping_confirmation=events_pb2.EventsResponse.PingConfirmation(
                    ids=[1], invalid_ids=[2], temporary_failed_ids=[3]
                )
            ),
            b"\x2a\x09" + b"\x0a\x01\x01" + b"\x12\x01\x02" + b"\x1a\x01\x03",
        ),
        # SetRequest: store=1, key=2, create_only=4, last_revision=5
        (
            state_pb2.SetRequest(store="st", key="k", create_only=True, last_revision=4),
            b"\x0a\x02st" + b"\x12\x01k" + b"\x20\x01" + b"\x28\x04",
        ),
        (state_pb2.DeleteRequest(last_revision=0), b"\x18\x00"),
    ],
)
def test_golden_encodings(message: Message, expected: bytes) -> None:
    assert message.SerializeToString(deterministic=True) == expected
    assert type(message).FromString(expected) == message


def test_stream_pointer_is_one_oneof() -> None:
    pointer = events_pb2.StreamPointer(start=True)
    assert pointer.WhichOneof("pointer") == "start"
    pointer.offset = 12
    assert pointer.WhichOneof("pointer") == "offset"
    assert not pointer.start


def test_from_field_is_reachable_despite_the_keyword() -> None:
    # `from` is a Python keyword: servicers read and write it through getattr.
    request = events_pb2.EnsureConsumerRequest(stream="orders")
    assert not request.HasField("from")
    getattr(request, "from").offset = 42
    assert request.HasField("from")
    assert request.SerializeToString() == b"\x0a\x06orders" + b"\x22\x02\x28\x2a"


@pytest.mark.parametrize(
    ("pb2", "grpc_module"), [(events_pb2, events_grpc), (state_pb2, state_grpc)]
)
def test_generated_modules_live_under_windshift_grpc(
    pb2: ModuleType, grpc_module: ModuleType
) -> None:
    prefix = "windshift_grpc._proto.windshift."
    assert pb2.__name__.startswith(prefix)
    for value in vars(pb2).values():
        if isinstance(value, type) and issubclass(value, Message):
            assert value.__module__ == pb2.__name__
    referenced = [value for value in vars(grpc_module).values() if isinstance(value, ModuleType)]
    assert pb2 in referenced
    assert not [
        module.__name__
        for module in referenced
        if module.__name__ == "windshift" or module.__name__.startswith("windshift.")
    ]


def test_servicer_and_stub_classes_exist() -> None:
    assert isinstance(events_grpc.EventsServiceServicer, type)
    assert isinstance(state_grpc.StateServiceServicer, type)
    assert callable(events_grpc.add_EventsServiceServicer_to_server)
    assert callable(state_grpc.add_StateServiceServicer_to_server)
    assert isinstance(events_grpc, types.ModuleType)
