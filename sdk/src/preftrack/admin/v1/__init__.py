"""Generated from proto/preftrack/admin/v1; do not edit."""
