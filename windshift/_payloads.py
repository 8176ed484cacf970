"""Payloads: protobuf messages (the default, shared with Go) and pydantic models as JSON.

One place decides how a value becomes an event body, a state value or a
dead letter's data, and how it is read back:

* a protobuf message (or an ``Any``): the serialized message, ``WS-Data-Type``
  its full name, no content type: the format Go Windshift services read;
* a pydantic model (``pip install 'windshift[pydantic]'``): its JSON,
  ``WS-Data-Type`` the model's type name, and ``Content-Type:
  application/json``, so that readers (and the gRPC façade) tell the
  formats apart. In a state store, where a value is always a
  ``google.protobuf.Any``, a model is kept as a ``google.protobuf.Struct``.

A model's type name is its ``model_config["title"]`` when set, else
``<module>.<qualified name>`` of its class. Reading a model checks the
format, the type name and the JSON; a protobuf reader meeting JSON (or the
reverse) gets a :class:`~windshift.ValidationError` naming both formats.

pydantic is imported only when a model is met: without the extra, protobuf
works as before.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct, Value

from windshift import _wire as wire
from windshift.errors import ValidationError

if TYPE_CHECKING:
    from pydantic import BaseModel

    Payload = Message | BaseModel
else:
    Payload = Any

T = TypeVar("T")

JSON = "application/json"
STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"


def is_model(value: object) -> bool:
    """Whether ``value`` is a pydantic model instance (without importing pydantic)."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(value, pydantic.BaseModel)


def is_model_class(kind: object) -> bool:
    """Whether ``kind`` is a pydantic model class."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(kind, type) and issubclass(kind, pydantic.BaseModel)


def type_name(kind: type[Any]) -> str:
    """The ``WS-Data-Type`` of a pydantic model class."""
    title = (getattr(kind, "model_config", None) or {}).get("title")
    return str(title) if title else f"{kind.__module__}.{kind.__qualname__}"


def encode(value: object) -> tuple[str, bytes, str | None]:
    """The data type, body and content type (None for protobuf) of an event's data.

    Raises:
        ValidationError: neither a protobuf message nor a pydantic model.
    """
    if is_model(value):
        return type_name(type(value)), cast("BaseModel", value).model_dump_json().encode(), JSON
    if not isinstance(value, Message):
        raise ValidationError(
            f"event data must be a protobuf message or a pydantic model, got {type(value).__name__}"
        )
    data_type, body = wire.encode_message(value)
    return data_type, body, None


def content_type(headers: Mapping[str, str]) -> str | None:
    """The body's content type; None (protobuf) unless a header says otherwise."""
    value = headers.get(wire.HEADER_CONTENT_TYPE)
    return value.split(";", 1)[0].strip().lower() if value else None


def as_any(data_type: str, body: bytes, kind: str | None) -> AnyProto:
    """An event body as a ``google.protobuf.Any``: a JSON body as a Struct (or Value)."""
    if kind != JSON:
        return wire.decode_message(data_type, body)
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    packed = AnyProto()
    if isinstance(document, dict):
        packed.Pack(json_format.ParseDict(document, Struct()))
    else:
        packed.Pack(json_format.ParseDict(document, Value()))
    return packed


def decode(kind: type[T], *, data_type: str, body: bytes, content: str | None, what: str) -> T:
    """Read a body as ``kind`` (a protobuf message class or a pydantic model class).

    Args:
        what: what holds the body, for messages ("event 17", "dead letter 3").

    Raises:
        ValidationError: the body is of the other format or another type, or
            does not parse as ``kind``.
    """
    if is_model_class(kind):
        expected = type_name(kind)
        if content != JSON:
            raise ValidationError(
                f"{what} holds protobuf {data_type!r}, not JSON for the pydantic model {expected!r}"
            )
        if data_type and data_type != expected:
            raise ValidationError(f"{what} holds {data_type!r}, not {expected!r}")
        try:
            return cast("T", cast("type[BaseModel]", kind).model_validate_json(body))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ValidationError(
                f"{what} is not a valid {expected}: {_first_error(exc)}"
            ) from None
    if not (isinstance(kind, type) and issubclass(kind, Message)):
        raise ValidationError(
            f"unpack takes a protobuf message class or a pydantic model class, got {kind!r}"
        )
    expected = kind.DESCRIPTOR.full_name
    if content == JSON:
        raise ValidationError(f"{what} holds JSON {data_type!r}, not protobuf {expected!r}")
    if data_type and data_type != expected:
        raise ValidationError(f"{what} holds {data_type!r}, not {expected!r}")
    message = kind()
    try:
        message.ParseFromString(body)
    except Exception as exc:  # protobuf raises DecodeError and others
        raise ValidationError(f"{what} is not a valid {expected}: {exc}") from None
    return cast("T", message)


def pack_state(value: object) -> bytes:
    """A state value as the serialized ``Any`` a store keeps (a model: as a Struct).

    Raises:
        ValidationError: an Any without a type URL, or neither a protobuf
            message nor a pydantic model.
    """
    if isinstance(value, AnyProto):
        if not value.type_url:
            raise ValidationError("state value is missing: the Any has no type_url")
        return value.SerializeToString()
    packed = AnyProto()
    if is_model(value):
        document = cast("BaseModel", value).model_dump(mode="json")
        packed.Pack(json_format.ParseDict(document, Struct()))
        return packed.SerializeToString()
    if not isinstance(value, Message):
        raise ValidationError(
            "state value must be a protobuf message or a pydantic model, "
            f"got {type(value).__name__}"
        )
    packed.Pack(value)
    return packed.SerializeToString()


def unpack_state(kind: type[T], value: AnyProto, what: str) -> T:
    """Read a state value (an ``Any``) as ``kind``, a protobuf or pydantic model class.

    Raises:
        ValidationError: the value is of another type or does not parse.
    """
    held = value.type_url.rpartition("/")[2]
    if is_model_class(kind):
        if held not in (STRUCT, _VALUE):
            raise ValidationError(
                f"{what} holds protobuf {held!r}, not JSON for the pydantic model "
                f"{type_name(kind)!r}"
            )
        document = Struct() if held == STRUCT else Value()
        value.Unpack(document)
        try:
            return cast(
                "T",
                cast("type[BaseModel]", kind).model_validate(json_format.MessageToDict(document)),
            )
        except ValueError as exc:
            raise ValidationError(
                f"{what} is not a valid {type_name(kind)}: {_first_error(exc)}"
            ) from None
    if not (isinstance(kind, type) and issubclass(kind, Message)):
        raise ValidationError(
            f"unpack takes a protobuf message class or a pydantic model class, got {kind!r}"
        )
    message = kind()
    if not value.Unpack(message):
        raise ValidationError(f"{what} holds {value.type_url!r}, not {kind.DESCRIPTOR.full_name!r}")
    return cast("T", message)


def to_json(
    data_type: str, body: bytes, content: str | None, pool: DescriptorPool | None = None
) -> object | None:
    """A body as a JSON-ready document, for people to read; None when its type is unknown.

    JSON bodies are parsed; a protobuf body is decoded when ``pool`` (or
    protobuf's default pool, which holds every generated module imported so
    far) knows ``data_type``, and written as protobuf's JSON mapping.
    A body that does not parse as its type is None too.
    """
    if content == JSON:
        try:
            document: object = json.loads(body)
        except ValueError:
            return None
        return document
    if not data_type:
        return None
    try:
        descriptor = (pool or descriptor_pool.Default()).FindMessageTypeByName(data_type)
    except KeyError:
        return None
    message = message_factory.GetMessageClass(descriptor)()
    try:
        message.ParseFromString(body)
        return json_format.MessageToDict(message, descriptor_pool=pool)
    except Exception:  # protobuf raises DecodeError, TypeError (an Any of an unknown type)...
        return None


def any_to_json(value: AnyProto, pool: DescriptorPool | None = None) -> object | None:
    """A state value or dead letter's data (an ``Any``) as :func:`to_json` reads bodies."""
    held = value.type_url.rpartition("/")[2]
    return to_json(held, value.value, None, pool)


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ())) or "(the document)"
            return f"{where}: {first.get('msg')}"
        except Exception:
            pass
    return " ".join(str(exc).split())[:200]


__all__ = [
    "JSON",
    "Payload",
    "any_to_json",
    "as_any",
    "content_type",
    "decode",
    "encode",
    "is_model",
    "is_model_class",
    "pack_state",
    "to_json",
    "type_name",
    "unpack_state",
]
