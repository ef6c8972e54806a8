"""``python tests/helpers/kill_at.py WHERE run.py ARGS...``: run.py, killed with SIGKILL at WHERE.

WHERE picks a moment no signal handler can react to (the point is a hard kill):
  ``probe``                 inside the selection probe
  ``step:N``                in the N-th training step of this launch (from 1)
  ``ckpt-write:N``          half-way through writing the N-th checkpoint file (from 1)
  ``relink:N``              after the N-th checkpoint is saved and the old one removed, before
                            ``last.ckpt`` is pointed at it
  ``file:NAME``             after the first file called NAME is written beside its place, before
                            the rename that publishes it (``record.json``, ``adapter.safetensors``,
                            ``launches.json``...)
  ``never``                 not at all (a re-launch through the same entry point)
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(where: str) -> None:
    kind, _, arg = where.partition(":")
    if kind == "probe":
        import grft_app.methods.grft as grft_method

        def select(*args, **kwargs):
            die()

        grft_method.select = select
    elif kind == "step":
        from grft_app.lit.module import FineTuneModule

        real, seen = FineTuneModule.training_step, [0]

        def training_step(self, *args, **kwargs):
            seen[0] += 1
            if seen[0] == int(arg):
                die()
            return real(self, *args, **kwargs)

        FineTuneModule.training_step = training_step
    elif kind == "ckpt-write":
        import grft_app.lit.checkpoints as checkpoints

        seen = [0]
        real_write = checkpoints.write_bytes

        def write_bytes(tmp, data):
            if not str(tmp).endswith(".sha256") and ".sha256." not in Path(tmp).name:
                seen[0] += 1
                if seen[0] == int(arg):
                    with open(tmp, "wb") as f:
                        f.write(data[: len(data) // 2])
                        f.flush()
                        os.fsync(f.fileno())
                    die()
            real_write(tmp, data)

        checkpoints.write_bytes = write_bytes
    elif kind == "relink":
        real_symlink, seen = os.symlink, [0]

        def symlink(src, dst, *args, **kwargs):
            if str(dst).endswith("last.ckpt"):
                seen[0] += 1
                if seen[0] == int(arg):
                    die()
            return real_symlink(src, dst, *args, **kwargs)

        os.symlink = symlink
    elif kind == "file":
        import grft.io

        real_replace = grft.io.os.replace

        def replace(src, dst, *args, **kwargs):
            if Path(dst).name == arg:
                die()
            return real_replace(src, dst, *args, **kwargs)

        grft.io.os.replace = replace
    elif kind != "never":
        raise SystemExit(f"unknown kill point {where!r}")


if __name__ == "__main__":
    from grft_app.paths import ROOT  # the checkout whose code runs (PYTHONPATH)

    where, script, *args = sys.argv[1:]
    arm(where)
    sys.argv = [script, *args]
    runpy.run_path(str(ROOT / script), run_name="__main__")
