"""`gptzoo serve` pinned to core 0 with one thread per model, for the benchmark scripts beside this file (the load
generator goes on core 1)."""

from __future__ import annotations

import os
import subprocess
import time

import httpx


def start(exe: str, store: str, port: int, extra: list[str], name: str = "server",
          startup_s: float = 180.0, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Starts the server (with `env` added to this process's environment) and returns once /readyz answers 200;
    exits the script with the server's log if it dies or is not ready within `startup_s`."""
    cmd = [exe, "serve", "--store", store, "--port", str(port), "--cpus", "0", "--threads", "1",
           "--log-level", "warning", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env} if env else None)
    return wait_ready(proc, f"http://127.0.0.1:{port}/readyz", name, startup_s)


def wait_ready(proc: subprocess.Popen, url: str, name: str, startup_s: float) -> subprocess.Popen:
    """Returns `proc` once `url` answers 200; exits the script with its log if it dies or is not ready in time."""
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if proc.poll() is not None:
            log = proc.stderr.read()[-2000:] if proc.stderr else "(its log is where its stderr went)"
            raise SystemExit(f"{name}: the server exited: {log}")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return proc
        except httpx.HTTPError:
            continue
    proc.kill()
    raise SystemExit(f"{name}: not ready after {startup_s:.0f} s")


def stop(procs: list[subprocess.Popen]) -> None:
    """Ends the servers together: SIGTERM to all (they drain at once), then waits for each."""
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)
