"""Child processes (DataLoader workers, process pools) that die with their parent.

A worker's parent can die without running any clean-up (``kill -9``, the out-of-memory killer):
daemonic processes are then left running, holding their memory, because only a normal exit of the
parent stops them. On Linux the kernel can kill a child when its parent dies (``prctl
PR_SET_PDEATHSIG``); elsewhere nothing is done and the usual clean-up on normal exit applies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int, *_: object) -> None:
    """Ask the kernel to SIGKILL this process when ``parent_pid`` dies; exit at once if it has
    died already. A ``worker_init_fn`` / pool ``initializer`` (extra arguments are ignored).

    The signal is tied to the parent *thread* that started this process: start workers from a
    thread that lives as long as they should (the main thread, as here)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl
            pass
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
