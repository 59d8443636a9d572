"""SIGKILL a real process once it has reached a chosen point (it touches a flag file there): the crash tests'
one way of killing a run mid-work."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def kill_when_flagged(cmd: list[str], flag: Path, timeout: float = 240) -> None:
    """Run `cmd` from the repository root, SIGKILL it as soon as `flag` exists, and check it died of that."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None and not flag.exists():
            time.sleep(0.01)
        assert proc.poll() is None and flag.exists(), proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
