"""The JAX data-parallel trainer, its process 0 SIGKILLed in the middle of writing a checkpoint.

Usage: ``jax_train_killed_in_checkpoint_write.py STEP [trainer flags]``. Process 0 dies once
``ckpt-STEP.npz``'s data is in its temporary file and before the file is renamed into place:
what a host that loses power mid-save leaves behind. The other processes then wait for it in
the next step's all-reduce (the test kills them): the restarted run must resume from the
checkpoint before.
"""

import os
import signal
import sys

import numpy as np

kill_at = sys.argv.pop(1)
savez = np.savez


def savez_unless_killed(file, *args, **kwds):
    savez(file, *args, **kwds)
    if f"ckpt-{kill_at}.npz" in os.path.basename(str(file)):
        os.kill(os.getpid(), signal.SIGKILL)


np.savez = savez_unless_killed

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from keras_regnet.training.main import run_main  # noqa: E402

run_main()
