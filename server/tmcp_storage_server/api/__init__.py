"""gRPC servicers: convert requests to core calls and core results to responses."""
