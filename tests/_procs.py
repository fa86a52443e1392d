"""Running a command so that a hang fails fast and leaves nothing behind.

`run` is subprocess.run for tests: the command gets its own session, a
timeout always applies (60 s unless told), and on timeout, or if the test is
interrupted, the whole session (the command and anything it started) is
SIGKILLed and reaped before the error propagates. The `popen` fixture in
conftest.py does the same for commands a test keeps running beside it.
"""

from __future__ import annotations

import os
import signal
import subprocess

DEFAULT_TIMEOUT = 60.0


def kill_session(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run(args, *, timeout: float | None = DEFAULT_TIMEOUT, check: bool = False, capture_output: bool = False,
        input=None, **kwargs) -> subprocess.CompletedProcess:
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    p = subprocess.Popen(args, start_new_session=True, **kwargs)
    try:
        out, err = p.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        kill_session(p)
        exc.output, exc.stderr = p.communicate()
        raise
    except BaseException:
        kill_session(p)
        p.wait()
        raise
    cp = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    if check:
        cp.check_returncode()
    return cp
