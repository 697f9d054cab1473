"""Shared state backends (memory, SQLite, Redis) that let many gateway nodes act as one."""
