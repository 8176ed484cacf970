"""windshift_grpc: the gRPC façade of windshift (``windshift-grpc serve``).

It serves ``windshift.events.v1alpha1.EventsService``, wire compatible with
the original Go Windshift service, on top of the :mod:`windshift` library.
Each module has one job:

- ``events_service``: the servicer; each RPC converts, calls the library, converts back.
- ``events_stream``: one bidirectional ``Events`` call (flow control, confirmations).
- ``convert``: proto messages <-> library values.
- ``status``: the one table of windshift errors -> gRPC status codes.
- ``calls``: the one layer every call passes: authenticate, admit, decode, authorize,
  run inside a server span, map the status, log one line.
- ``auth``: the tokens file: tokens (as digests), names, permissions and their patterns.
- ``permissions``: which permission each RPC needs, and the token checks.
- ``admission``: counts calls and refuses new ones while the server drains.
- ``health``: ``/healthz``, ``/readyz`` and the gRPC health service.
- ``server``: the grpc.aio server, embedded NATS, graceful stop.
- ``supervisor``: ``serve --workers``: several server processes on one port.
- ``settings``, ``cli``, ``logs``, ``telemetry``: configuration and process set-up.
- ``_proto``: the generated code (``python -m windshift_grpc._proto.generate``).
- ``proto``: the generated modules under stable public names, for clients.

See docs/grpc.md.
"""
