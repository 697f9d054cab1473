"""Config rules for functions, their triggers and the AWS access keys of the admin API.

The limits follow AWS Lambda's where Lambda has one (timeout 15m, memory 128MiB-10GiB,
4KiB of environment, reserved variable names, 2 async retries, a 6h event age), so a
function that is valid here is valid there and the other way round. Checks that look at
the disk (the code folder, the handler module, a provided runtime's bootstrap) run at load,
so ``lambdagate check`` finds a typo before the first invocation does.
"""

from __future__ import annotations

import importlib.machinery
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import msgspec

from .config_decode import Issues, close_match_hint, key_path
from .units import describe_value, format_duration, format_size

if TYPE_CHECKING:
    from .config import Function, Route, Trigger

__all__ = [
    "AWS_RESERVED_ENV",
    "FunctionChecker",
    "check_aws_keys",
    "python_handler_module",
    "schedule_problem",
]

MiB = 1024 * 1024
MAX_TIMEOUT = 15 * 60.0
MIN_MEMORY = 128 * MiB
MAX_MEMORY = 10240 * MiB
MAX_EVENT_AGE = 6 * 3600.0
MAX_BATCH_WINDOW = 5 * 60.0
MAX_ENV_BYTES = 4096

#: Variables Lambda sets itself and refuses in a function's configuration; the sandbox sets them too.
AWS_RESERVED_ENV = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
# Lambda also reserves the AWS_LAMBDA_ prefix for variables it adds over time.
_RESERVED_PREFIX = "AWS_LAMBDA_"

# Lambda's function names: they appear in ARNs and in the Invoke API's URL path.
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Queue names become Redis stream keys and SQLite values; SQS allows 80 characters.
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,80}")
_ENV_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# AWS SDKs put the key id in the SigV4 credential scope ("AKID/date/region/service/aws4_request").
_ACCESS_KEY_ID = re.compile(r"[A-Z0-9]{1,128}")
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
# AWS's Python runtime splits at the last "." and imports the rest with "/" read as ".".
_PYTHON_HANDLER = re.compile(rf"((?:{_IDENTIFIER}[./])*{_IDENTIFIER})\.({_IDENTIFIER})")


def python_handler_module(handler: str) -> str | None:
    """``"app.handler"`` -> ``"app"``, ``"src/app.main"`` -> ``"src.app"``; None if it is no handler name."""
    match = _PYTHON_HANDLER.fullmatch(handler)
    return match.group(1).replace("/", ".") if match else None


def schedule_problem(expression: str) -> str | None:
    """None when `expression` is a schedule, else what is wrong with it (without the key path).

    EventBridge syntax, plus ``rate(N seconds)``: AWS has no such unit, but a schedule that
    fires every few seconds is what a test or a demo of clustered firing needs.
    """
    # Imported here: a config without schedules never loads the functions package.
    from .functions.schedule import parse_schedule

    try:
        parse_schedule(expression, allow_seconds=True)
    except ValueError as exc:
        return str(exc)
    return None


def check_aws_keys(keys: dict[str, str], path: str, issues: Issues) -> None:
    """Key ids are shown in errors (AWS logs them too); secrets never are."""
    for key_id, secret in keys.items():
        entry = key_path(path, key_id)
        if not _ACCESS_KEY_ID.fullmatch(key_id):
            issues.add(
                entry,
                'access key ids are 1 to 128 upper-case letters and digits, like "AKIAIOSFODNN7EXAMPLE"',
            )
        if not secret.strip():
            issues.add(entry, "the secret access key must not be empty")
        elif any(char.isspace() or not char.isprintable() for char in secret):
            issues.add(entry, "the secret access key must not contain spaces or control characters")


def _duration_limit(value: float, limit: float, why: str) -> str | None:
    if value <= 0:
        return "expected a duration above 0"
    if value > limit:
        return f'expected at most "{format_duration(limit)}"{why}, got "{format_duration(value)}"'
    return None


class FunctionChecker:
    """Validators for [functions.*] and [[triggers]], then the references between them and routes.

    One instance per load, owned by the RuleChecker, which delegates to it.
    """

    def __init__(self) -> None:
        self._references: list[tuple[str, str]] = []  # (key path, function name) from routes and triggers
        self._queue_consumers: dict[str, str] = {}  # queue name -> key path of its trigger

    def note_route(self, route: Route, path: str) -> None:
        if route.function is not None:
            self._references.append((key_path(path, "function"), route.function))

    def check_function(
        self, function: Function, path: str, issues: Issues, broken: frozenset[str], given: frozenset[str]
    ) -> Function:
        folder = self._check_folder(function.code, key_path(path, "code"), issues)
        if function.runtime == "python" and not broken & {"runtime", "handler"}:
            self._check_python_handler(function, folder, key_path(path, "handler"), issues)
        elif function.runtime == "provided" and folder is not None:
            self._check_bootstrap(folder, key_path(path, "code"), issues)
        self._check_limits(function, path, issues, broken)
        self._check_env(function.env, key_path(path, "env"), issues)
        if function.dead_letter is not None and not _QUEUE_NAME.fullmatch(function.dead_letter):
            issues.add(key_path(path, "dead_letter"), _queue_name_rule(function.dead_letter))
        # Absolute, so that the sandbox's cwd and LAMBDA_TASK_ROOT do not depend on where the
        # gateway happens to be when it starts an instance.
        return msgspec.structs.replace(function, code=folder or os.path.abspath(function.code))

    def _check_folder(self, code: str, path: str, issues: Issues) -> str | None:
        """The code folder as an absolute path, or None (reported) when it is no folder."""
        if not code.strip():
            issues.add(path, 'expected a folder like "functions/hello", got ""')
            return None
        folder = os.path.abspath(code)
        if not os.path.isdir(folder):
            issues.add(
                path, f"no folder {describe_value(code)} (relative paths start at the working directory)"
            )
            return None
        return folder

    def _check_python_handler(
        self, function: Function, folder: str | None, path: str, issues: Issues
    ) -> None:
        if function.handler is None:
            issues.add(
                path,
                'missing required key (runtime "python" needs handler = "module.function", '
                'e.g. "app.handler")',
            )
            return
        module = python_handler_module(function.handler)
        if module is None:
            issues.add(
                path, f'expected "module.function" like "app.handler", got {describe_value(function.handler)}'
            )
        elif folder is not None and not _module_exists(folder, module):
            relative = module.replace(".", "/")
            issues.add(
                path,
                f"no module {describe_value(module)} in the code folder "
                f"(looked for {relative}.py and {relative}/ in {describe_value(function.code)})",
            )

    def _check_bootstrap(self, folder: str, path: str, issues: Issues) -> None:
        bootstrap = os.path.join(folder, "bootstrap")
        if not os.path.isfile(bootstrap):
            issues.add(path, 'runtime "provided" runs the file "bootstrap" in this folder, which is missing')
        elif not os.access(bootstrap, os.X_OK):
            issues.add(path, 'runtime "provided" runs "bootstrap" in this folder, which is not executable')

    def _check_limits(self, function: Function, path: str, issues: Issues, broken: frozenset[str]) -> None:
        checks = (
            ("timeout", _duration_limit(function.timeout, MAX_TIMEOUT, " (Lambda's limit)")),
            ("idle_timeout", _duration_limit(function.idle_timeout, float("inf"), "")),
            ("max_event_age", _duration_limit(function.max_event_age, MAX_EVENT_AGE, " (Lambda's limit)")),
        )
        for name, problem in checks:
            if problem is not None and name not in broken:
                issues.add(key_path(path, name), problem)
        memory = function.memory
        if "memory" not in broken and not (MIN_MEMORY <= memory <= MAX_MEMORY and memory % MiB == 0):
            issues.add(
                key_path(path, "memory"),
                f'expected a size from "128MiB" to "10GiB" in whole MiB, got "{format_size(memory)}"',
            )
        if not broken & {"provisioned", "concurrency"} and function.provisioned > function.concurrency:
            issues.add(
                key_path(path, "provisioned"),
                f"expected at most concurrency ({function.concurrency}), got {function.provisioned}",
            )

    def _check_env(self, env: dict[str, str], path: str, issues: Issues) -> None:
        for name, value in env.items():
            entry = key_path(path, name)
            if name in AWS_RESERVED_ENV or name.startswith(_RESERVED_PREFIX):
                issues.add(entry, "is reserved: the gateway sets it for every function, as Lambda does")
            elif not _ENV_NAME.fullmatch(name):
                issues.add(entry, "variable names start with a letter and use letters, digits and '_'")
            if "\0" in value:
                issues.add(entry, "must not contain NUL characters")
        size = sum(len(name.encode()) + len(value.encode()) for name, value in env.items())
        if size > MAX_ENV_BYTES:
            issues.add(path, f"names and values take {size} bytes; Lambda's limit is 4096 (4KiB)")

    def check_trigger(
        self, trigger: Trigger, path: str, issues: Issues, broken: frozenset[str], given: frozenset[str]
    ) -> Trigger:
        if "function" not in broken:
            self._references.append((key_path(path, "function"), trigger.function))
        if broken & {"schedule", "queue"}:
            pass  # already reported; the kind check would only add noise
        elif trigger.schedule is None and trigger.queue is None:
            issues.add(path, 'needs either schedule = "rate(...)" or "cron(...)", or queue = "<name>"')
        elif trigger.schedule is not None and trigger.queue is not None:
            issues.add(path, "has both schedule and queue; a trigger has exactly one of them")
        if trigger.schedule is not None:
            problem = schedule_problem(trigger.schedule)
            if problem is not None:
                issues.add(key_path(path, "schedule"), problem)
        if trigger.queue is not None:
            self._check_queue(trigger.queue, key_path(path, "queue"), issues)
            if "batch_window" not in broken and trigger.batch_window > MAX_BATCH_WINDOW:
                issues.add(
                    key_path(path, "batch_window"),
                    f'expected at most "5m", got "{format_duration(trigger.batch_window)}"',
                )
        elif "queue" not in broken:
            for name in ("batch_size", "batch_window", "max_receive_count"):
                if name in given:
                    issues.add(key_path(path, name), "only applies to queue triggers")
        return trigger

    def _check_queue(self, queue: str, path: str, issues: Issues) -> None:
        if not _QUEUE_NAME.fullmatch(queue):
            issues.add(path, _queue_name_rule(queue))
            return
        # Two consumers of one queue would split its messages between two functions at random.
        first = self._queue_consumers.setdefault(queue, path)
        if first != path:
            issues.add(
                path, f"queue {describe_value(queue)} is already consumed by {first.removesuffix('.queue')}"
            )

    def check_references(self, issues: Issues, functions: Iterable[str]) -> None:
        names = sorted(functions)
        for name in names:
            if not _FUNCTION_NAME.fullmatch(name):
                issues.add(
                    key_path("functions", name),
                    "function names are 1 to 64 letters, digits, '_' and '-' (as in Lambda)",
                )
        for path, name in self._references:
            if name not in names:
                hint = close_match_hint(name, names) or ("" if names else " (no [functions] are defined)")
                issues.add(path, f"no function named {describe_value(name)}{hint}")


def _queue_name_rule(queue: str) -> str:
    return f"queue names are 1 to 80 letters, digits, '_', '-' and '.', got {describe_value(queue)}"


def _module_exists(folder: str, module: str) -> bool:
    """Whether `module` can be imported from `folder`: a source or compiled file, or a package."""
    *parents, leaf = module.split(".")
    directory = os.path.join(folder, *parents)
    if os.path.isdir(os.path.join(directory, leaf)):
        return True  # a package (with or without __init__.py)
    return any(
        os.path.isfile(os.path.join(directory, leaf + suffix))
        for suffix in importlib.machinery.all_suffixes()
    )
