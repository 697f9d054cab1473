"""The admin API (served on the [admin] listener): see gateway.admin.app."""

from .app import AdminApp

__all__ = ["AdminApp"]
