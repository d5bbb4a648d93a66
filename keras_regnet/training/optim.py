"""pycls's optimiser semantics in Keras 3."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="keras_regnet")
class TorchSGD(keras.optimizers.SGD):
    """SGD with PyTorch's (and so pycls's) momentum: ``buf = m * buf + g``; ``w -= lr * d``.

    ``d`` is ``g + m * buf`` with Nesterov, else ``buf``. Keras's SGD keeps the learning rate
    inside the velocity (``v = m * v - lr * g``), which differs from PyTorch whenever the
    learning rate changes, as it does every epoch in the pycls schedule.

    Example:
        >>> opt = TorchSGD(learning_rate=0.1, momentum=0.9, nesterov=True)
    """

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = keras.ops.cast(learning_rate, variable.dtype)
        gradient = keras.ops.cast(gradient, variable.dtype)
        if self.momentum == 0:
            self.assign_sub(variable, learning_rate * gradient)
            return
        momentum = keras.ops.cast(self.momentum, variable.dtype)
        buf = self.momentums[self._get_variable_index(variable)]
        self.assign(buf, buf * momentum + gradient)
        direction = gradient + momentum * buf if self.nesterov else buf
        self.assign_sub(variable, learning_rate * direction)
