"""The design-space core: specs, complexity, sampling and analysis.

Pure Python + numpy: importing this package never imports TensorFlow or Keras.
"""

from keras_regnet.design.complexity import count as count_complexity
from keras_regnet.design.spec import (
    AnyNetSpec,
    Block,
    RegNetSpec,
    quantized_linear_widths,
)

__all__ = ["AnyNetSpec", "Block", "RegNetSpec", "count_complexity", "quantized_linear_widths"]
