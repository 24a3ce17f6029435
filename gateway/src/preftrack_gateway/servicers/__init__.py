"""gRPC servicers: the only gateway modules that touch protobuf messages, one per service."""
