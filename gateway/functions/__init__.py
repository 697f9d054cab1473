"""Lambda-compatible functions: sandboxed instances, AWS's Runtime API and per-function pools."""
