"""Design-space sweeps: sample a population, train each model briefly, compare the spaces.

The sweep file is JSON lines, one model each (see ``keras_regnet.design.sampling.record``);
training adds ``error`` (top-1 %) and ``epochs``. The file is rewritten atomically after each
model, so a killed sweep resumes where it stopped and never retrains a finished model.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from keras_regnet.design.sampling import sample, spec_from_record
from keras_regnet.files import atomic_path


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str, records: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def sample_file(space: str, n: int, seed: int, out: str, **windows) -> list[dict]:
    records = sample(space, n, seed=seed, **windows)
    write_jsonl(out, records)
    return records


def train_file(path: str, epochs: int, data_dir: str | None = None, image_size: int = 32,
               batch_size: int = 64, work_dir: str | None = None, num_classes: int | None = None,
               progress: bool = True, steps_per_epoch: int | None = None) -> list[dict]:
    """Trains every model of a sweep file that has no ``error`` yet; resumable.

    Defaults train on the embedded digits demo at 32x32, where a 400 MF-class model costs a few
    seconds per epoch on a CPU. ``steps_per_epoch`` shortens each epoch (recorded beside
    ``epochs``, so models trained on different budgets are not compared unawares).

    Example::

        train_file("x.jsonl", epochs=1, steps_per_epoch=4)
    """
    from keras_regnet.training.config import TrainConfig
    from keras_regnet.training.demo import prepare
    from keras_regnet.training.loop import run

    records = read_jsonl(path)
    work_dir = work_dir or os.path.splitext(path)[0] + "_work"
    demo = data_dir is None
    data_dir = data_dir or prepare(os.path.join(work_dir, "demo_data"))
    if num_classes is None:
        labels = os.path.join(data_dir, "labels.txt")
        if not os.path.exists(labels):
            raise ValueError(f"{data_dir} has no labels.txt: pass num_classes.")
        num_classes = len(open(labels, encoding="utf-8").read().split())
    todo = [i for i, r in enumerate(records) if "error" not in r]
    for done, i in enumerate(todo):
        start = time.perf_counter()
        model_dir = os.path.join(work_dir, f"model_{i:04d}")
        config = TrainConfig(
            data_dir=data_dir, model_dir=model_dir, strategy="one_device", epochs=epochs,
            batch_size=batch_size, image_size=image_size, num_classes=num_classes,
            checkpoint_every=50, crop_area_min=0.35 if demo else 0.08, flip=not demo,
            steps_per_epoch=steps_per_epoch)
        metrics = run(config, spec=spec_from_record(records[i]), verbose=False, export=False)
        records[i].update(error=round(100.0 - metrics["val_top1"], 3), epochs=epochs)
        if steps_per_epoch:
            records[i]["steps_per_epoch"] = steps_per_epoch
        write_jsonl(path, records)  # the model counts as finished only from here on
        shutil.rmtree(model_dir, ignore_errors=True)
        if progress:
            print(f"[{len(records) - len(todo) + done + 1}/{len(records)}] model {i} "
                  f"({records[i]['space']}, {records[i]['flops'] / 1e6:.0f} MF): error "
                  f"{records[i]['error']:.2f}% in {time.perf_counter() - start:.0f} s", flush=True)
    return records


def analyze_files(paths: list[str], out_dir: str) -> str:
    """Plots and ``report.html`` comparing the spaces found in the (trained) sweep files."""
    from keras_regnet.design.report import write_report

    by_space: dict[str, list[dict]] = {}
    for path in paths:
        for rec in read_jsonl(path):
            if "error" in rec:
                by_space.setdefault(rec["space"], []).append(rec)
    if not by_space:
        raise ValueError(f"No trained models (records with 'error') in {paths}; run "
                         f"`keras-regnet sweep train` first.")
    return write_report(by_space, out_dir)
