"""The generated protobuf and gRPC modules of the Windshift API, for clients.

Example:
    >>> import grpc
    >>> from windshift_grpc.proto import events_pb2, events_pb2_grpc
    >>> async with grpc.aio.insecure_channel("127.0.0.1:8080") as channel:
    ...     stub = events_pb2_grpc.EventsServiceStub(channel)
    ...     subjects = events_pb2.EnsureStreamRequest.Subjects(subjects=["orders.>"])
    ...     await stub.EnsureStream(events_pb2.EnsureStreamRequest(name="orders", subjects=subjects))

Four modules, one message module and one stub module per API, under the
names protoc would give a file ``events.proto`` and ``state.proto``:

- ``events_pb2``: the messages of ``windshift.events.v1alpha1``
  (``proto/windshift/events/v1alpha1/service.proto``);
- ``events_pb2_grpc``: ``EventsServiceStub`` (and ``EventsServiceServicer``);
- ``state_pb2``: the messages of ``windshift.state.v1alpha1``
  (``proto/windshift/state/v1alpha1/service.proto``);
- ``state_pb2_grpc``: ``StateServiceStub`` (and ``StateServiceServicer``).

They are the modules under ``windshift_grpc._proto``, whose layout follows
the code generator and may change; these names stay. The generated ``.pyi``
stubs come with them, so type checkers see every message, field and RPC
(the RPCs' types also need ``types-grpcio``: grpcio ships no type hints).
Importing this module needs the ``grpc`` extra (``grpcio``).
"""

from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as events_pb2
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as events_pb2_grpc
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2 as state_pb2
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2_grpc as state_pb2_grpc

__all__ = ["events_pb2", "events_pb2_grpc", "state_pb2", "state_pb2_grpc"]
