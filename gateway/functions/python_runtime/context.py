"""The context object handed to ``handler(event, context)``, with the fields AWS's runtime has."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


class CognitoIdentity:
    def __init__(self, identity_id: str | None = None, pool_id: str | None = None) -> None:
        self.cognito_identity_id = identity_id
        self.cognito_identity_pool_id = pool_id


class Client:
    def __init__(self, fields: dict[str, Any]) -> None:
        self.installation_id = fields.get("installation_id")
        self.app_title = fields.get("app_title")
        self.app_version_name = fields.get("app_version_name")
        self.app_version_code = fields.get("app_version_code")
        self.app_package_name = fields.get("app_package_name")


class ClientContext:
    def __init__(self, fields: dict[str, Any]) -> None:
        client = fields.get("client")
        self.client = Client(client) if isinstance(client, dict) else None
        self.custom = fields.get("custom")
        self.env = fields.get("env")


def _json_header(value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        decoded = json.loads(value)
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None


_fields: tuple[str | None, ...] | None = None


def _forget_fields() -> None:
    global _fields
    _fields = None


# An instance is forked from the zygote and sets its log stream name after the fork: read the
# fields anew in each child. (Not by comparing os.getpid() per invocation: glibc does not cache
# the pid, so that was a system call per invocation.)
os.register_at_fork(after_in_child=_forget_fields)


def _instance_fields() -> tuple[str | None, ...]:
    """The context's fields that come from the instance's environment (read once per process,
    at its first invocation)."""
    global _fields
    if _fields is None:
        _fields = tuple(
            os.environ.get(name)
            for name in (
                "AWS_LAMBDA_FUNCTION_NAME",
                "AWS_LAMBDA_FUNCTION_VERSION",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                "AWS_LAMBDA_LOG_GROUP_NAME",
                "AWS_LAMBDA_LOG_STREAM_NAME",
            )
        )
    return _fields


class LambdaContext:
    """AWS's fields; ``memory_limit_in_mb`` is a string there too (it comes from the environment)."""

    def __init__(
        self,
        request_id: str,
        deadline_ms: int,
        invoked_function_arn: str | None,
        client_context: str | None,
        cognito_identity: str | None,
        tenant_id: str | None = None,
    ) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        # The same for every invocation of the instance: read from the environment once.
        (
            self.function_name,
            self.function_version,
            self.memory_limit_in_mb,
            self.log_group_name,
            self.log_stream_name,
        ) = _instance_fields()
        self.tenant_id = tenant_id
        self._deadline_ms = deadline_ms
        context_fields = _json_header(client_context)
        self.client_context = ClientContext(context_fields) if context_fields is not None else None
        identity = _json_header(cognito_identity)
        self.identity = (
            CognitoIdentity(identity.get("cognitoIdentityId"), identity.get("cognitoIdentityPoolId"))
            if identity is not None
            else CognitoIdentity()
        )

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def log(self, message: str) -> None:
        sys.stdout.write(message)
        sys.stdout.flush()

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},function_name={self.function_name},"
            f"memory_limit_in_mb={self.memory_limit_in_mb},invoked_function_arn={self.invoked_function_arn}])"
        )
