"""``--proto``: the protobuf types the commands decode data with (and ``state set --type`` builds).

Each ``--proto`` is one of:

* a descriptor set file (``protoc --descriptor_set_out=types.binpb
  --include_imports ...``, or ``buf build -o types.binpb``): a serialized
  ``google.protobuf.FileDescriptorSet``; files it imports and leaves out are
  taken from protobuf's own pool when it knows them (the well-known types);
* a Python module of generated code: a dotted module name (imported with
  the current directory on the path, as ``windshift run`` does) or the path
  of a ``.py`` file.

:func:`load_pool` puts them all in one descriptor pool, together with the
well-known types (Any, Struct, Timestamp, the wrappers...).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    json_format,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import DecodeError, Message

from windshift._cli._output import Failure, usage_error

_WELL_KNOWN = (any_pb2, duration_pb2, empty_pb2, struct_pb2, timestamp_pb2, wrappers_pb2)


def load_pool(specs: Sequence[str]) -> DescriptorPool:
    """One pool with the types of every ``--proto`` given and the well-known types.

    Raises:
        Failure: (exit 2) a ``--proto`` that is neither a descriptor set nor
            an importable module, naming it.
    """
    pool = DescriptorPool()
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for module in _WELL_KNOWN:
        _collect(module.DESCRIPTOR, files)
    for spec in specs:
        for proto in _files_of(spec):
            files.setdefault(proto.name, proto)
    added: set[str] = set()
    for proto_name in list(files):
        _add(proto_name, files, pool, added, [])
    return pool


def _files_of(spec: str) -> list[descriptor_pb2.FileDescriptorProto]:
    path = Path(spec)
    if path.suffix != ".py" and path.is_file():
        try:
            found = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
        except (DecodeError, OSError) as exc:
            raise usage_error(
                f"--proto {spec!r} is not a protobuf descriptor set ({exc or 'it does not parse'})"
            ) from None
        if not found.file:
            raise usage_error(f"--proto {spec!r} is not a protobuf descriptor set (no files)")
        return list(found.file)
    module = _import(spec)
    descriptor = getattr(module, "DESCRIPTOR", None)
    if not isinstance(descriptor, FileDescriptor):
        raise usage_error(
            f"--proto {spec!r} is no module of generated protobuf code (it has no file DESCRIPTOR)"
        )
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    _collect(descriptor, files)
    return list(files.values())


def _import(spec: str) -> ModuleType:
    path = Path(spec)
    if path.suffix == ".py":
        if not path.is_file():
            raise usage_error(f"--proto {spec!r}: there is no such file")
        name = f"_windshift_proto_{path.stem}"
        loaded = importlib.util.spec_from_file_location(name, path)
        if loaded is None or loaded.loader is None:
            raise usage_error(f"--proto {spec!r} cannot be imported")
        module = importlib.util.module_from_spec(loaded)
        sys.path.insert(0, str(path.resolve().parent))  # its own imports (other _pb2 files)
        try:
            loaded.loader.exec_module(module)
        except Exception as exc:
            raise usage_error(
                f"--proto {spec!r} failed to import: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            sys.path.pop(0)
        return module
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, "")
    try:
        return importlib.import_module(spec)
    except ImportError as exc:
        raise usage_error(
            f"--proto {spec!r} is neither a descriptor set file nor an importable module ({exc})"
        ) from None
    except Exception as exc:
        raise usage_error(
            f"--proto {spec!r} failed to import: {type(exc).__name__}: {exc}"
        ) from None


def _collect(
    descriptor: FileDescriptor, into: dict[str, descriptor_pb2.FileDescriptorProto]
) -> None:
    if descriptor.name in into:
        return
    for dependency in descriptor.dependencies:
        _collect(dependency, into)
    proto = descriptor_pb2.FileDescriptorProto()
    descriptor.CopyToProto(proto)
    into[descriptor.name] = proto


def _add(
    name: str,
    files: dict[str, descriptor_pb2.FileDescriptorProto],
    pool: DescriptorPool,
    added: set[str],
    path: list[str],
) -> None:
    if name in added:
        return
    proto = files.get(name)
    if proto is None:
        try:  # an import left out of a descriptor set: protobuf's own pool may know it
            known = descriptor_pool.Default().FindFileByName(name)
        except KeyError:
            raise usage_error(
                f"--proto: {path[-1]!r} imports {name!r}, which no --proto holds "
                "(build the descriptor set with --include_imports)"
            ) from None
        _collect(known, files)
        proto = files[name]
    for dependency in proto.dependency:
        _add(dependency, files, pool, added, [*path, name])
    try:
        pool.Add(proto)
    except (TypeError, ValueError) as exc:
        raise usage_error(f"--proto: {name!r} cannot be loaded: {exc}") from None
    added.add(name)


def message_from_json(pool: DescriptorPool, type_name: str, document: str, what: str) -> Message:
    """A message of ``type_name`` (a full protobuf name known to ``pool``) from JSON text.

    Raises:
        Failure: (exit 2) an unknown type, or JSON that is not such a message.
    """
    try:
        descriptor = pool.FindMessageTypeByName(type_name)
    except KeyError:
        raise usage_error(
            f"--type {type_name!r} is not a protobuf message type of the given --proto"
        ) from None
    message = message_factory.GetMessageClass(descriptor)()
    try:
        json_format.Parse(document, message, descriptor_pool=pool)
    except json_format.ParseError as exc:
        raise usage_error(f"{what} is not a JSON {type_name}: {exc}") from None
    return message


__all__ = ["Failure", "load_pool", "message_from_json"]
