"""The lambdagate command: in-process through main() and as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gateway
from gateway.cli import main
from gateway.config import ConfigError, config_json_schema

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "gateway.toml"
BAD = """\
[server]
lsten = ":80"

[[routes]]
path = "/users/{id}"
upstream = "userz"
"""
BAD_LINES = [
    'bad.toml: server.lsten: unknown key (did you mean "listen"?)',
    'bad.toml: routes[0].upstream: no upstream named "userz" (no [upstreams] are defined)',
]


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMBDAGATE_CONFIG", raising=False)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text(BAD)
    return tmp_path


def test_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(EXAMPLE)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{EXAMPLE}: ok (2 routes, 1 upstream)\n"
    assert captured.err == ""


def test_check_summary_counts(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "one.toml").write_text('[[routes]]\npath = "/"\nstatic = {}\n')
    assert main(["check", "--config", "one.toml"]) == 0
    assert capsys.readouterr().out == "one.toml: ok (1 route, 0 upstreams)\n"


def test_check_prints_every_error_to_stderr(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", "bad.toml"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == BAD_LINES


def test_check_missing_file(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", "nope.toml"]) == 1
    assert capsys.readouterr().err == "nope.toml: cannot read the config file: No such file or directory\n"


def test_config_file_defaults(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "gateway.toml").write_text("")
    assert main(["check"]) == 0
    assert capsys.readouterr().out == "gateway.toml: ok (0 routes, 0 upstreams)\n"
    monkeypatch.setenv("LAMBDAGATE_CONFIG", "bad.toml")
    assert main(["check"]) == 1
    assert capsys.readouterr().err.splitlines() == BAD_LINES
    assert main(["check", "-c", "gateway.toml"]) == 0  # -c beats the environment


def test_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == config_json_schema()
    assert out.splitlines()[1].startswith('  "')  # indent 2


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"lambdagate {gateway.__version__}"
    assert lines[1].startswith(f"Python {sys.version_info.major}.{sys.version_info.minor}.")
    names = [line.split()[0] for line in lines[2:]]
    assert names == ["Cython", "uvloop", "msgspec"]
    assert all(line.split()[1][0].isdigit() for line in lines[2:])


def test_no_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: lambdagate" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve"])
    assert caught.value.code == 2
    assert "invalid choice: 'serve'" in capsys.readouterr().err


def test_run_hands_the_path_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_run(path: str) -> int:
        calls.append(path)
        return 7

    # By name: the server module is imported as lazily here as the CLI imports it.
    monkeypatch.setattr("gateway.server.run", fake_run)
    assert main(["run", "-c", "some.toml"]) == 7
    assert calls == ["some.toml"]


def test_run_reports_config_errors_raised_by_the_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_run(path: str) -> int:
        raise ConfigError([f"{path}: server.workers: expected an integer >= 0, got -1"])

    monkeypatch.setattr("gateway.server.run", fake_run)
    assert main(["run", "-c", "x.toml"]) == 1
    assert capsys.readouterr().err == "x.toml: server.workers: expected an integer >= 0, got -1\n"


def test_run_with_an_invalid_config_exits_1(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real server refuses a bad config before it binds or forks anything."""
    assert main(["run", "-c", "bad.toml"]) == 1
    assert capsys.readouterr().err.splitlines() == BAD_LINES


# --- as a process --------------------------------------------------------------------------------


def _gateway(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "LAMBDAGATE_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_module_check(in_tmp: Path) -> None:
    ok = _gateway("check", "-c", str(EXAMPLE))
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, f"{EXAMPLE}: ok (2 routes, 1 upstream)\n", "")
    bad = _gateway("check", "-c", "bad.toml", cwd=in_tmp)
    assert (bad.returncode, bad.stdout, bad.stderr.splitlines()) == (1, "", BAD_LINES)


def test_module_schema_and_version() -> None:
    schema = _gateway("schema")
    assert schema.returncode == 0
    assert json.loads(schema.stdout) == config_json_schema()
    version = _gateway("version")
    assert version.returncode == 0
    assert version.stdout.startswith(f"lambdagate {gateway.__version__}\nPython ")


def test_console_script(in_tmp: Path) -> None:
    script = Path(sys.executable).with_name("lambdagate")
    if not script.exists():
        pytest.fail(f"console script missing at {script}: reinstall with pip install -e .")
    result = subprocess.run([script, "check", "-c", "bad.toml"], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr.splitlines()) == (1, BAD_LINES)


def test_closed_stdout_is_not_a_traceback() -> None:
    """`lambdagate schema | head -1`: the reader leaves early; exit 1 quietly."""
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        stderr = process.stderr.read()
        assert process.wait(timeout=60) == 1
    assert stderr == b""
