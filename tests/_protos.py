"""A protobuf type no generated module of the test process holds, for ``--proto`` tests.

``acme.shop.v1.Order`` (``id``: string, ``items``: int32) lives in a pool of
its own here, so that protobuf's default pool does not know it: a command
can decode it only from a ``--proto`` it is given.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message

TYPE = "acme.shop.v1.Order"


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="acme/shop/v1/order.proto", package="acme.shop.v1", syntax="proto3"
    )
    message = proto.message_type.add(name="Order")
    message.field.add(
        name="id",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    message.field.add(
        name="items",
        number=2,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    return proto


def order(id: str, items: int) -> Message:
    """An ``acme.shop.v1.Order``, from a pool of its own."""
    pool = DescriptorPool()
    pool.Add(_file())
    message = message_factory.GetMessageClass(pool.FindMessageTypeByName(TYPE))()
    message.id = id  # type: ignore[attr-defined]
    message.items = items  # type: ignore[attr-defined]
    return message


def write_descriptor_set(path: Path) -> Path:
    """The type as a descriptor set file (what ``protoc --descriptor_set_out`` writes)."""
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[_file()]).SerializeToString())
    return path


def write_module(path: Path) -> Path:
    """The type as a Python module, as protoc's generated code registers it."""
    serialized = _file().SerializeToString()
    path.write_text(
        textwrap.dedent(
            f"""\
            from google.protobuf import descriptor_pool

            DESCRIPTOR = descriptor_pool.Default().AddSerializedFile({serialized!r})
            """
        )
    )
    return path
