"""The trainer, SIGKILLed in the middle of writing one checkpoint.

Usage: ``train_killed_in_checkpoint_write.py STEP [trainer flags]``. The chief (or the only
process) dies once checkpoint ``ckpt-STEP``'s data shards are written to ``ckpt-STEP_temp/``
and before TensorFlow merges them into ``ckpt-STEP.index`` / ``.data``: what a host that loses
power mid-save leaves behind. Other workers (``.worker-N`` directories) are not killed, so they
finish that checkpoint: the restarted run must agree on where to resume.
"""

import os
import signal
import sys

import tensorflow as tf
from tensorflow.python.ops import gen_io_ops

kill_at = sys.argv.pop(1)
merge = gen_io_ops.merge_v2_checkpoints  # the saver calls it through the module: patchable


def merge_unless_killed(checkpoint_prefixes, destination_prefix, *args, **kwargs):
    def die_at_the_chosen_checkpoint(prefix):
        path = prefix.numpy().decode()
        if path.endswith(f"ckpt-{kill_at}") and ".worker-" not in path:
            os.kill(os.getpid(), signal.SIGKILL)
        return prefix

    # Runs after the shard saves (eagerly, or ordered by the saver's control dependencies).
    gate = tf.py_function(die_at_the_chosen_checkpoint, [destination_prefix], tf.string)
    with tf.control_dependencies([gate]):
        return merge(checkpoint_prefixes, destination_prefix, *args, **kwargs)


gen_io_ops.merge_v2_checkpoints = merge_unless_killed

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from keras_regnet.training.main import run_main  # noqa: E402

run_main()
