"""The gRPC façade's generated code: up to date, and wire-compatible with the Go service.

The expected tables below are transcribed from the original service's
definitions (LevelFourAB/windshift-service, proto/windshift/*/v1alpha1). They
pin every field number, type, label, `optional` and oneof, so that an edit of
our .proto that would break clients generated from the original fails here.
The ``ADDED_*`` tables pin what this implementation adds (the dead-letter
RPCs and fields, PublishEvents, Subscribe.max_batch and the batch member of
EventsResponse): additions only, fields on the original's messages numbered
from 100 up, and bytes that a peer built from the original reads and passes
on unharmed.
"""

from __future__ import annotations

import dataclasses
import types
from datetime import UTC, datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    timestamp_pb2,
)
from google.protobuf.message import Message

from windshift import ConsumerOptions, StreamOptions
from windshift_grpc import convert
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

# Additions of this implementation: not in the original, and only added to it.
ADDED_EVENTS_FIELDS: dict[str, FieldRow] = {
    "EnsureStreamRequest.compression": (100, "string", "", "optional", "optional"),
    "EnsureConsumerRequest.max_delivery_attempts": (100, "uint32", "", "optional", "optional"),
    "EnsureConsumerRequest.dead_letter_stream": (101, "string", "", "optional", "optional"),
    "EventsRequest.Reject.reason": (100, "string", "", "optional", "optional"),
    "EventsRequest.Subscribe.max_batch": (100, "int32", "", "optional", "optional"),
    "EventsResponse.events": (100, "message", _EV + "EventBatch", "optional", "oneof response"),
    "EventBatch.events": (1, "message", _EV + "Event", "repeated", ""),
    "PublishEventsRequest.events": (1, "message", _EV + "PublishEventRequest", "repeated", ""),
    "PublishEventsResponse.results": (1, "message", _EV + "PublishEventResult", "repeated", ""),
    "PublishEventResult.id": (1, "uint64", "", "optional", "oneof result"),
    "PublishEventResult.error": (
        2,
        "message",
        _EV + "PublishEventError",
        "optional",
        "oneof result",
    ),
    "PublishEventResult.duplicate": (3, "bool", "", "optional", ""),
    "PublishEventError.code": (1, "int32", "", "optional", ""),
    "PublishEventError.message": (2, "string", "", "optional", ""),
    "ListDeadLettersRequest.dead_letter_stream": (1, "string", "", "optional", ""),
    "ListDeadLettersRequest.after_id": (2, "uint64", "", "optional", ""),
    "ListDeadLettersRequest.limit": (3, "uint32", "", "optional", "optional"),
    "ListDeadLettersResponse.dead_letters": (1, "message", _EV + "DeadLetter", "repeated", ""),
    "GetDeadLetterRequest.dead_letter_stream": (1, "string", "", "optional", ""),
    "GetDeadLetterRequest.id": (2, "uint64", "", "optional", ""),
    "GetDeadLetterResponse.dead_letter": (1, "message", _EV + "DeadLetter", "optional", ""),
    "ReplayDeadLetterRequest.dead_letter_stream": (1, "string", "", "optional", ""),
    "ReplayDeadLetterRequest.id": (2, "uint64", "", "optional", ""),
    "ReplayDeadLetterResponse.id": (1, "uint64", "", "optional", ""),
    "ReplayDeadLetterResponse.stream": (2, "string", "", "optional", ""),
    "DeleteDeadLetterRequest.dead_letter_stream": (1, "string", "", "optional", ""),
    "DeleteDeadLetterRequest.id": (2, "uint64", "", "optional", ""),
    "PurgeDeadLettersRequest.dead_letter_stream": (1, "string", "", "optional", ""),
    "PurgeDeadLettersResponse.purged": (1, "uint64", "", "optional", ""),
    "DeadLetter.id": (1, "uint64", "", "optional", ""),
    "DeadLetter.subject": (2, "string", "", "optional", ""),
    "DeadLetter.stream": (3, "string", "", "optional", ""),
    "DeadLetter.consumer": (4, "string", "", "optional", ""),
    "DeadLetter.event_id": (5, "uint64", "", "optional", ""),
    "DeadLetter.attempts": (6, "uint64", "", "optional", ""),
    "DeadLetter.reason": (7, "string", "", "optional", ""),
    "DeadLetter.dead_since": (8, "message", _TIMESTAMP, "optional", ""),
    "DeadLetter.headers": (9, "message", _EV + "Headers", "optional", ""),
    "DeadLetter.data": (10, "message", _ANY, "optional", ""),
}
ADDED_EVENTS_MESSAGES = {
    "ListDeadLettersRequest",
    "ListDeadLettersResponse",
    "GetDeadLetterRequest",
    "GetDeadLetterResponse",
    "ReplayDeadLetterRequest",
    "ReplayDeadLetterResponse",
    "DeleteDeadLetterRequest",
    "DeleteDeadLetterResponse",
    "PurgeDeadLettersRequest",
    "PurgeDeadLettersResponse",
    "DeadLetter",
    "EventBatch",
    "PublishEventsRequest",
    "PublishEventsResponse",
    "PublishEventResult",
    "PublishEventError",
}
#: Field numbers from here up, on the original's messages, are ours.
FIRST_ADDED_NUMBER = 100

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
ADDED_EVENTS_METHODS = {
    "ListDeadLetters": ("ListDeadLettersRequest", "ListDeadLettersResponse", False, False),
    "GetDeadLetter": ("GetDeadLetterRequest", "GetDeadLetterResponse", False, False),
    "ReplayDeadLetter": ("ReplayDeadLetterRequest", "ReplayDeadLetterResponse", False, False),
    "DeleteDeadLetter": ("DeleteDeadLetterRequest", "DeleteDeadLetterResponse", False, False),
    "PurgeDeadLetters": ("PurgeDeadLettersRequest", "PurgeDeadLettersResponse", False, False),
    "PublishEvents": ("PublishEventsRequest", "PublishEventsResponse", False, False),
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
    return _fields_of(_file_proto(module))


def _fields_of(file_proto: descriptor_pb2.FileDescriptorProto) -> dict[str, FieldRow]:
    table: dict[str, FieldRow] = {}
    for path, message in _walk(list(file_proto.message_type)):
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
    assert _methods(events_pb2, "EventsService") == EXPECTED_EVENTS_METHODS | ADDED_EVENTS_METHODS
    # The original's methods first, in its order; ours after them.
    assert [method.name for method in service.methods] == [
        *EXPECTED_EVENTS_METHODS,
        *ADDED_EVENTS_METHODS,
    ]


def test_state_service_descriptor() -> None:
    service = state_pb2.DESCRIPTOR.services_by_name["StateService"]
    assert service.full_name == "windshift.state.v1alpha1.StateService"
    assert _methods(state_pb2, "StateService") == EXPECTED_STATE_METHODS
    assert [method.name for method in service.methods] == list(EXPECTED_STATE_METHODS)


def test_events_messages_and_fields_match_the_original() -> None:
    assert {path for path, _ in _walk(list(_file_proto(events_pb2).message_type))} == (
        EXPECTED_EVENTS_MESSAGES | ADDED_EVENTS_MESSAGES
    )
    table = _field_table(events_pb2)
    assert {key: table[key] for key in EXPECTED_EVENTS_FIELDS if key in table} == (
        EXPECTED_EVENTS_FIELDS
    )
    assert table == EXPECTED_EVENTS_FIELDS | ADDED_EVENTS_FIELDS
    enums = {
        f"{path}.{enum.name}": {value.name: value.number for value in enum.value}
        for path, message in _walk(list(_file_proto(events_pb2).message_type))
        for enum in message.enum_type
    }
    assert enums == EXPECTED_EVENTS_ENUMS
    assert not _file_proto(events_pb2).enum_type


def test_the_additions_only_add() -> None:
    assert not ADDED_EVENTS_MESSAGES & EXPECTED_EVENTS_MESSAGES
    assert not set(ADDED_EVENTS_METHODS) & set(EXPECTED_EVENTS_METHODS)
    assert not set(ADDED_EVENTS_FIELDS) & set(EXPECTED_EVENTS_FIELDS)
    for key, row in ADDED_EVENTS_FIELDS.items():
        message = key.rpartition(".")[0]
        if message in EXPECTED_EVENTS_MESSAGES:  # a field added to one of the original's
            assert row[0] >= FIRST_ADDED_NUMBER, key
        else:
            assert message in ADDED_EVENTS_MESSAGES, key
    # The added RPCs use added messages only, so no original message changes meaning.
    for request, response, *_ in ADDED_EVENTS_METHODS.values():
        assert {request, response} <= ADDED_EVENTS_MESSAGES


def _drop_added_fields(message: descriptor_pb2.DescriptorProto) -> None:
    """Remove fields numbered from 100 up (also of nested messages), and their `optional` oneofs."""
    fields = [field for field in message.field if field.number < FIRST_ADDED_NUMBER]
    used = sorted({field.oneof_index for field in fields if field.HasField("oneof_index")})
    oneofs = [message.oneof_decl[index] for index in used]
    for field in fields:
        if field.HasField("oneof_index"):
            field.oneof_index = used.index(field.oneof_index)
    del message.field[:]
    message.field.extend(fields)
    del message.oneof_decl[:]
    message.oneof_decl.extend(oneofs)
    for nested in message.nested_type:
        _drop_added_fields(nested)


def _original_events_file() -> descriptor_pb2.FileDescriptorProto:
    """Our events file with the additions taken out: the original's definition."""
    original = _file_proto(events_pb2)
    kept = [
        message for message in original.message_type if message.name not in ADDED_EVENTS_MESSAGES
    ]
    del original.message_type[:]
    original.message_type.extend(kept)
    for message in original.message_type:
        _drop_added_fields(message)
    (service,) = original.service
    methods = [method for method in service.method if method.name in EXPECTED_EVENTS_METHODS]
    del service.method[:]
    service.method.extend(methods)
    return original


def _original_message_class(name: str) -> Any:
    """A message class built from the original's definition, as an old peer has it.

    Typed ``Any``: a class made at run time has no typed fields or keywords
    (types-protobuf's ``Message.__init__`` takes none).
    """
    pool = descriptor_pool.DescriptorPool()
    for well_known in (any_pb2, timestamp_pb2, duration_pb2):
        file_proto = descriptor_pb2.FileDescriptorProto()
        well_known.DESCRIPTOR.CopyToProto(file_proto)
        pool.Add(file_proto)
    pool.Add(_original_events_file())
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"windshift.events.v1alpha1.{name}")
    )


def test_without_the_additions_the_file_is_the_original() -> None:
    original = _original_events_file()
    assert _fields_of(original) == EXPECTED_EVENTS_FIELDS
    assert {path for path, _ in _walk(list(original.message_type))} == EXPECTED_EVENTS_MESSAGES
    assert [method.name for method in original.service[0].method] == list(EXPECTED_EVENTS_METHODS)


def test_an_old_peer_reads_an_ensure_consumer_request_with_the_added_fields() -> None:
    request = events_pb2.EnsureConsumerRequest(
        stream="orders",
        name="billing",
        subjects=["orders.>"],
        max_delivery_attempts=5,
        dead_letter_stream="orders-dead",
    )
    getattr(request, "from").start = True
    sent = request.SerializeToString(deterministic=True)

    old_class = _original_message_class("EnsureConsumerRequest")
    assert "dead_letter_stream" not in old_class.DESCRIPTOR.fields_by_name
    read: Any = old_class.FromString(sent)  # a class made at run time: no typed fields
    # The original's fields read as usual ...
    assert (read.stream, read.name, list(read.subjects)) == ("orders", "billing", ["orders.>"])
    assert getattr(read, "from").start
    # ... the added ones are kept as unknown fields and passed on unchanged.
    assert read.SerializeToString(deterministic=True) == sent
    assert events_pb2.EnsureConsumerRequest.FromString(read.SerializeToString()) == request


def test_an_old_client_request_leaves_the_added_fields_unset() -> None:
    old_class = _original_message_class("EnsureConsumerRequest")
    old = old_class(stream="orders", name="billing", subjects=["orders.>"])
    request = events_pb2.EnsureConsumerRequest.FromString(old.SerializeToString())
    assert not request.HasField("max_delivery_attempts")
    assert not request.HasField("dead_letter_stream")
    assert convert.additions(request, ConsumerOptions) == {}
    assert convert.unset_additions(request, ConsumerOptions) == {
        "max_delivery_attempts",
        "dead_letter_stream",
    }


def test_an_old_peer_passes_max_batch_on_and_an_old_subscribe_leaves_it_unset() -> None:
    request = events_pb2.EventsRequest(
        subscribe=events_pb2.EventsRequest.Subscribe(
            stream="orders", consumer="billing", max_processing_events=10, max_batch=25
        )
    )
    sent = request.SerializeToString(deterministic=True)
    old_class = _original_message_class("EventsRequest")
    read: Any = old_class.FromString(sent)
    assert (read.subscribe.stream, read.subscribe.max_processing_events) == ("orders", 10)
    assert "max_batch" not in read.subscribe.DESCRIPTOR.fields_by_name
    assert read.SerializeToString(deterministic=True) == sent  # kept as an unknown field

    old = old_class(subscribe={"stream": "orders", "consumer": "billing"})
    subscribe = events_pb2.EventsRequest.FromString(old.SerializeToString()).subscribe
    assert not subscribe.HasField("max_batch")
    assert subscribe.max_batch == 0  # one event per message, as the original


def test_a_single_event_is_sent_as_the_original_sends_it_and_a_batch_only_adds() -> None:
    event = events_pb2.Event(id=7, subject="orders.created", delivery_attempt=1)
    single = events_pb2.EventsResponse(event=event).SerializeToString(deterministic=True)
    old_class = _original_message_class("EventsResponse")
    # The bytes of one event are the original's (the server sends them to
    # every client that leaves max_batch out) ...
    assert single == old_class(
        event={"id": 7, "subject": "orders.created", "delivery_attempt": 1}
    ).SerializeToString(deterministic=True)
    # ... and a batch is a member the original does not have: an old peer
    # reads no member at all, never a wrong one.
    batch = events_pb2.EventsResponse(events=events_pb2.EventBatch(events=[event, event]))
    read: Any = old_class.FromString(batch.SerializeToString())
    assert read.WhichOneof("response") is None


def test_an_event_of_publish_events_is_a_publish_event_request_byte_for_byte() -> None:
    # A client that already builds PublishEventRequests batches them unchanged.
    one = events_pb2.PublishEventRequest(subject="a.b", idempotency_key="k", expected_last_id=3)
    encoded = one.SerializeToString(deterministic=True)
    batch = events_pb2.PublishEventsRequest(events=[one, one])
    assert (
        batch.SerializeToString(deterministic=True)
        == (b"\x0a" + bytes([len(encoded)]) + encoded) * 2
    )


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
        # Added EnsureConsumerRequest fields: max_delivery_attempts=100 (tag 800 = a0 06,
        # varint), dead_letter_stream=101 (tag 810 = aa 06, length-delimited)
        (
            events_pb2.EnsureConsumerRequest(
                stream="s", max_delivery_attempts=3, dead_letter_stream="d"
            ),
            b"\x0a\x01s" + b"\xa0\x06\x03" + b"\xaa\x06\x01d",
        ),
        # Added Subscribe.max_batch=100 (tag 800 = a0 06, varint; a negative int32 takes
        # ten bytes, as protobuf encodes every negative int32)
        (
            events_pb2.EventsRequest.Subscribe(stream="s", max_batch=20),
            b"\x0a\x01s" + b"\xa0\x06\x14",
        ),
        (
            events_pb2.EventsRequest.Subscribe(max_batch=-1),
            b"\xa0\x06" + b"\xff" * 9 + b"\x01",
        ),
        # Added EventsResponse.events=100 (tag 802 = a2 06) { events=1 { id=1 } }
        (
            events_pb2.EventsResponse(
                events=events_pb2.EventBatch(events=[events_pb2.Event(id=5)])
            ),
            b"\xa2\x06\x04" + b"\x0a\x02\x08\x05",
        ),
        # PublishEventResult: id=1 | error=2 { code=1, message=2 }, duplicate=3
        (
            events_pb2.PublishEventResult(id=4, duplicate=True),
            b"\x08\x04" + b"\x18\x01",
        ),
        (
            events_pb2.PublishEventResult(error=events_pb2.PublishEventError(code=10, message="m")),
            b"\x12\x05" + b"\x08\x0a" + b"\x12\x01m",
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


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC),
        datetime(2026, 3, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 18, 59, 59, 999999, tzinfo=timezone(-timedelta(hours=5))),
    ],
)
def test_times_become_the_timestamps_protobuf_makes(moment: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)
    assert convert.to_timestamp(moment) == expected
    assert convert.to_timestamp(moment).ToDatetime(tzinfo=UTC) == moment


@pytest.mark.parametrize(
    ("message", "options"),
    [
        (events_pb2.EnsureStreamRequest, StreamOptions),
        (events_pb2.EnsureConsumerRequest, ConsumerOptions),
    ],
)
def test_added_option_fields_are_named_as_the_library_options(
    message: Any, options: type[Any]
) -> None:
    # convert.additions carries them by name: an added field of EnsureStream or
    # EnsureConsumer is an option of the same name, optional (so that "left
    # out" can be told apart and kept) or repeated.
    names = {field.name for field in dataclasses.fields(options)}
    for field in message.DESCRIPTOR.fields:
        if field.number >= convert.FIRST_ADDED_FIELD:
            assert field.name in names, f"{field.name} is no field of {options.__name__}"
            assert field.is_repeated or field.has_presence, f"{field.name} must be optional"
