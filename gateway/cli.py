"""The ``lambdagate`` command: run, check, invoke, functions, schema, version.

Only ``run`` imports the server (lazily), so ``check`` and ``schema`` work on a
machine where the compiled hot path is not built, and print no more than they must.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from collections.abc import Callable
from importlib import metadata

from . import __version__
from .config import Config, ConfigError, config_json_schema, load_config

__all__ = ["main"]

CONFIG_ENV = "LAMBDAGATE_CONFIG"
DEFAULT_CONFIG = "gateway.toml"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script and of ``python -m gateway``; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] | None = getattr(args, "command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return command(args)
    except BrokenPipeError:
        # The reader went away (`lambdagate schema | head`): not worth a traceback. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lambdagate",
        description="An edge gateway configured by one TOML file.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    config_help = f"config file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})"
    default_config = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG

    run = commands.add_parser("run", help="run the gateway in the foreground")
    run.add_argument("-c", "--config", default=default_config, metavar="FILE", help=config_help)
    run.set_defaults(command=_run)

    check = commands.add_parser("check", help="validate a config file and report every problem")
    check.add_argument("-c", "--config", default=default_config, metavar="FILE", help=config_help)
    check.set_defaults(command=_check)

    schema = commands.add_parser("schema", help="print the config file's JSON Schema")
    schema.set_defaults(command=_schema)

    invoke = commands.add_parser("invoke", help="invoke a function of the running gateway")
    invoke.add_argument("name", help="the function's name ([functions.NAME])")
    invoke.add_argument("--payload", default="{}", help="the event, as JSON (default {})")
    invoke.add_argument("--async", dest="async_", action="store_true", help="queue it (Event) and return")
    invoke.add_argument("--logs", action="store_true", help="print the invocation's log tail to stderr")
    invoke.add_argument("--timeout", type=float, default=930.0, help="seconds to wait for the answer")
    invoke.add_argument("-c", "--config", default=default_config, metavar="FILE", help=config_help)
    invoke.set_defaults(command=_invoke)

    functions = commands.add_parser(
        "functions", help="instances and metrics of the running gateway's functions"
    )
    functions.add_argument("--json", action="store_true", help="print the raw metrics as JSON")
    functions.add_argument("-c", "--config", default=default_config, metavar="FILE", help=config_help)
    functions.set_defaults(command=_functions)

    version = commands.add_parser("version", help="print versions of lambdagate and its runtime")
    version.set_defaults(command=_version)
    return parser


def _run(args: argparse.Namespace) -> int:
    # Imported here: the server pulls in the compiled hot path and uvloop, which the other
    # commands do not need.
    server = importlib.import_module("gateway.server")
    run: Callable[[str], int] = server.run
    try:
        return run(args.config)
    except ConfigError as exc:
        _print_errors(exc)
        return 1


def _invoke(args: argparse.Namespace) -> int:
    from .cli_invoke import invoke_command

    return invoke_command(args)


def _functions(args: argparse.Namespace) -> int:
    from .cli_invoke import functions_command

    return functions_command(args)


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _print_errors(exc)
        return 1
    print(f"{args.config}: ok ({_summary(config)})")
    return 0


def _summary(config: Config) -> str:
    counts = [("route", len(config.routes)), ("upstream", len(config.upstreams))]
    counts += [("function", len(config.functions)), ("trigger", len(config.triggers))]
    shown = [(what, n) for what, n in counts if n or what in ("route", "upstream")]
    return ", ".join(f"{n} {what}{'' if n == 1 else 's'}" for what, n in shown)


def _print_errors(exc: ConfigError) -> None:
    for line in exc.errors:
        print(line, file=sys.stderr)


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_json_schema(), indent=2, ensure_ascii=False))
    return 0


def _version(args: argparse.Namespace) -> int:
    print(f"lambdagate {__version__}")
    print(f"Python {platform.python_version()} ({platform.python_implementation()})")
    for distribution in ("Cython", "uvloop", "msgspec"):
        print(f"{distribution} {_distribution_version(distribution)}")
    return 0


def _distribution_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
