"""Generated from proto/preftrack/insights/v1; do not edit."""
