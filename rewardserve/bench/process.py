"""Server processes for benchmarks: started on a free loopback port, ready, watched, stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

READY_TIMEOUT = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen
    log: Path  # its stdout and stderr

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def memory(self) -> tuple[int, int]:
        """(resident, peak resident) bytes, from /proc: VmRSS and VmHWM."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
        return fields["VmRSS"], fields["VmHWM"]


@contextlib.contextmanager
def server_process(
    command: list[str], port: int, what: str, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Start `command` (a server on `port`) and yield it once /ready answers 200; stop it after."""
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "server.log"
        # Its output goes to a file, not a pipe: a pipe nobody reads fills up and stalls the server.
        with log.open("wb") as sink:
            environment = {**os.environ, **(env or {})}
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=environment)
        server = ServerProcess(url, process, log)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{what} exited with {process.returncode}: {server.log_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what} not ready after {READY_TIMEOUT} s")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                        break
                time.sleep(0.2)
            yield server
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


Server = contextlib.AbstractContextManager[ServerProcess]


def rewardserve_process(bundle: Path, env: dict[str, str] | None = None) -> Server:
    """`rewardserve serve` on `bundle`; `env` adds REWARDSERVE_* settings."""
    port = free_port()
    command = [sys.executable, "-m", "rewardserve.cli", "serve", "--bundle", str(bundle), "--port", str(port)]
    return server_process(command, port, "rewardserve serve", env)
