"""Benchmarks: the wrk-vs-nginx proxy harness, the idle-connection memory check and micro-benchmarks."""
