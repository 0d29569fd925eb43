"""Generated gRPC stubs for chaperon.v1 (built from protos/ at install time)."""
