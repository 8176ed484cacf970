"""Generated protobuf and gRPC code for the façade (do not edit by hand).

The modules below this package are produced from ``proto/`` by
``python -m windshift_grpc._proto.generate``; a test fails when they drift
from the sources. Import them by their full path, e.g.::

    from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2, service_pb2_grpc
"""
