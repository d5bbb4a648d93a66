"""Conversion parity table: max |logits difference| against the real reference libraries.

For every variant and every reference library that implements it (pycls, timm, torchvision),
builds the reference with random weights (BN statistics calibrated, see
keras_regnet.verify), converts it through its native file format, and prints the largest
logit difference at 224x224 and at 97x131.

    python benchmarks/parity_report.py [--models RegNetX002 RegNetY032]
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from timing_args import check_models  # noqa: E402  (same folder)


def main() -> None:
    import keras_regnet
    from keras_regnet import verify
    from keras_regnet.references import libraries_for
    from keras_regnet.variants import VARIANTS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(VARIANTS))
    args = parser.parse_args()
    args.models = check_models(parser, args.models)
    print(f"{'model':<14}{'source':<13}{'224x224':>10}{'97x131':>10}{'logit std':>11}")
    for name in args.models:
        for source in libraries_for(name):
            reference = verify.calibrated_reference(name, source)
            with tempfile.TemporaryDirectory() as tmp:
                model = keras_regnet.RegNet(name, weights=verify.save_native(reference, source, tmp),
                                            input_shape=(None, None, 3), classifier_activation=None)
            diffs, std = [], 0.0
            for h, w in [(224, 224), (97, 131)]:
                images = np.random.default_rng(0).uniform(0, 255, (2, h, w, 3)).astype("float32")
                diffs.append(verify.max_logit_difference(model, reference, source, images))
                std = max(std, float(verify.reference_logits(reference, images, source).std()))
            print(f"{name:<14}{source:<13}{diffs[0]:>10.2e}{diffs[1]:>10.2e}{std:>11.3f}", flush=True)


if __name__ == "__main__":
    main()
