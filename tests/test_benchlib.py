"""bench/benchlib.run_measured: a chatty command does not block it, and a stopped bench stops its command."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import benchlib  # noqa: E402


def test_a_command_writing_more_than_a_pipe_holds_is_measured_to_its_end(tmp_path):
    # 1 MiB on each stream: with pipes read only after the wait, the command would block on a full pipe forever.
    command = [sys.executable, "-c", "import sys; sys.stdout.write('o' * 2**20); sys.stderr.write('e' * 2**20)"]
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(out=benchlib.run_measured(command, tmp_path, dict(os.environ))))
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "run_measured blocked on the command's output"
    wall, cpu, rss, stdout, stderr = result["out"]
    assert stdout == "o" * 2**20 and stderr == "e" * 2**20
    assert wall > 0 and cpu >= 0 and rss > 0


def test_a_failing_command_raises_with_its_output(tmp_path):
    command = [sys.executable, "-c", "import sys; print('the reason'); sys.exit(3)"]
    with pytest.raises(SystemExit, match="the reason"):
        benchlib.run_measured(command, tmp_path, dict(os.environ))


def test_sigterm_to_the_bench_stops_the_measured_command(tmp_path):
    pid_file = tmp_path / "pid"
    command = [sys.executable, "-c",
               f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(45)"]

    def terminate_when_started():
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    def ignore(signum, frame):  # stands in for the bench's own handler; without run_measured's, SIGTERM is lost
        pass

    original = signal.signal(signal.SIGTERM, ignore)
    try:
        threading.Thread(target=terminate_when_started, daemon=True).start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            benchlib.run_measured(command, tmp_path, dict(os.environ))
        assert time.monotonic() - start < 30
        assert signal.getsignal(signal.SIGTERM) is ignore  # the bench's own handler is back
    finally:
        signal.signal(signal.SIGTERM, original)
    child = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # stopped and reaped, not left running
        os.kill(child, 0)
