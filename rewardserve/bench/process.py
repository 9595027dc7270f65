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

    def cpu_seconds(self) -> CpuTime:
        """CPU time used so far by the event loop's thread (the main thread) and by the rest."""
        return cpu_seconds(self.process.pid)


@dataclass(frozen=True)
class CpuTime:
    """User + system CPU seconds of a server process: its event loop (HTTP, JSON, validation,
    middleware, logging, metrics, futures) apart from its workers (tokenizer, engine, ONNX
    Runtime's pool)."""

    event_loop: float
    workers: float

    def __sub__(self, other: CpuTime) -> CpuTime:
        return CpuTime(self.event_loop - other.event_loop, self.workers - other.workers)


def _stat_seconds(path: Path) -> float:
    # The fields after the command name, which may hold spaces and parentheses itself.
    fields = path.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def cpu_seconds(pid: int) -> CpuTime:
    """The process's CPU time (its threads', exited ones included), split at its main thread."""
    total = _stat_seconds(Path(f"/proc/{pid}/stat"))
    main = _stat_seconds(Path(f"/proc/{pid}/task/{pid}/stat"))
    return CpuTime(main, total - main)


@contextlib.contextmanager
def server_process(
    command: list[str],
    port: int,
    what: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    ready_path: str = "/ready",
) -> Iterator[ServerProcess]:
    """Start `command` (a server on `port`) and yield it once `ready_path` answers 200; stop it after."""
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "server.log"
        # Its output goes to a file, not a pipe: a pipe nobody reads fills up and stalls the server.
        with log.open("wb") as sink:
            environment = {**os.environ, **(env or {})}
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=environment, cwd=cwd)
        server = ServerProcess(url, process, log)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{what} exited with {process.returncode}: {server.log_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what} not ready after {READY_TIMEOUT} s")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}{ready_path}", timeout=5).status_code == 200:
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


def rewardserve_process(bundle: Path, env: dict[str, str] | None = None, source: Path | None = None) -> Server:
    """`rewardserve serve` on `bundle`; `env` adds REWARDSERVE_* settings; `source`, a checkout
    of rewardserve to serve from instead of this one (e.g. a worktree of an earlier commit)."""
    port = free_port()
    bundle = Path(bundle).resolve()
    command = [sys.executable, "-m", "rewardserve.cli", "serve", "--bundle", str(bundle), "--port", str(port)]
    if source is None:
        return server_process(command, port, "rewardserve serve", env)
    # `python -m` puts the working directory first on sys.path: run there, so its rewardserve
    # is the one imported (PYTHONPATH too, for what it imports lazily).
    source = Path(source).resolve()
    env = {**(env or {}), "PYTHONPATH": str(source)}
    return server_process(command, port, f"rewardserve serve from {source}", env, cwd=source)
