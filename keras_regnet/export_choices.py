"""What ``export`` can be asked for: formats, quantisations, the default image-size bound.

Plain constants, apart from :mod:`keras_regnet.export`, so the CLI builds its parser without
loading TensorFlow.
"""

FORMATS = ("saved_model", "onnx", "litert", "openvino", "tflite")  # "tflite": LiteRT's old name
QUANTIZATIONS = ("none", "dynamic", "int8")
DEFAULT_MAX_PIXELS = 40_000_000  # a 40 MP photo decodes to 120 MB; the crop costs far less
DEFAULT_CALIBRATION_IMAGES = 128  # int8 calibration: LiteRT's and ONNX Runtime's guides suggest ~100-500
