"""Start the real gateway (`python -m gateway run -c FILE`) as a subprocess for a test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.upstream import free_port


class GatewayProcess:
    def __init__(self, config_text: str, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.config_path = workdir / "gateway.toml"
        self.config_path.write_text(config_text)
        self.log_path = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        wait_for_port(self.port, timeout, self)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(pid) for pid in out.split()]

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def wait_for_port(port: int, timeout: float, gateway: GatewayProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway is not None and gateway.proc is not None and gateway.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {gateway.proc.returncode}:\n{gateway.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


@contextmanager
def running_gateway(config_body: str, *, server_extra: str = "") -> Iterator[GatewayProcess]:
    """A gateway with `[server]` on a free port plus the given config body (upstreams, routes)."""
    port = free_port()
    text = (
        f'[server]\nlisten = "127.0.0.1:{port}"\nworkers = 1\n'
        + ("" if "access_log" in server_extra else 'access_log = "off"\n')
        + f"{server_extra}\n{config_body}"
    )
    with tempfile.TemporaryDirectory(prefix="lambdagate-test-") as tmp:
        gateway = GatewayProcess(text, port, Path(tmp))
        gateway.start()
        try:
            yield gateway
        finally:
            gateway.stop()


def raw_exchange(port: int, payload: bytes, *, timeout: float = 5.0, read_until_close: bool = True) -> bytes:
    """Send raw bytes, return everything read until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                if not read_until_close:
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)
