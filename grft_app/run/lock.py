"""One process at a time per run directory.

Run directories are named by the run key, so launching the same configuration twice at once
(two terminals, a sweep launched twice) would make two processes write the same checkpoints. The
lock is an OS file lock: it disappears with its process, so a killed or pre-empted job never
leaves a stale lock behind. Baseline runs are shared between launches (every GRFT setting of a
task compares against the same linear run), so those wait for the holder instead of failing.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path


class RunLocked(RuntimeError):
    pass


log = logging.getLogger("grft")


class RunLock:
    def __init__(self, run_dir: Path, wait: bool = False):
        self.path = Path(run_dir) / ".lock"
        self.wait = wait
        self.handle = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            if not self.wait:
                self.handle.close()
                raise RunLocked(f"{self.path.parent} is being trained by {holder}; wait for it or stop it") from None
            log.info("%s is being trained by %s; waiting for it", self.path.parent, holder)
            fcntl.flock(self.handle, fcntl.LOCK_EX)
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
