"""Generated from proto/preftrack/v1; do not edit."""
