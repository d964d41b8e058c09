"""Helpers for the worker processes that commands start."""

from __future__ import annotations

import ctypes
import os
import signal
import sys


def die_with_parent() -> None:
    """Pool initializer: on Linux, ask the kernel to SIGKILL this worker when its parent dies. Without it a
    kill -9 of the command leaves workers running on for seconds (or a whole training job), and a resumed run
    would share files with them."""
    if sys.platform.startswith("linux"):

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before the call: nobody is left to deliver the signal
            os._exit(1)
