"""windshift_grpc."""
