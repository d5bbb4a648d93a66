"""Where a test run's processes spent their CPU (the log sitecustomize.py in this folder writes).

    python tests/tools/process_log/summary.py /tmp/procs.jsonl [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("log")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with open(args.log) as log:
        processes = [json.loads(line) for line in log]
    by_test: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for process in processes:
        # The pytest workers themselves (and the suite's own pytest runs) have no test.
        key = process["test"] or "(pytest process) " + " ".join(process["argv"][:2])
        by_test[key][0] += 1
        by_test[key][1] += process["cpu"]
        by_test[key][2] += process["wall"]
    with_tensorflow = [p for p in processes if "tensorflow" in p["imported"] and p["test"]]
    print(f"{len(processes)} processes, {sum(p['cpu'] for p in processes):.0f} CPU s; "
          f"{len(with_tensorflow)} started by tests imported TensorFlow")
    print(f"{'processes':>9} {'CPU s':>8} {'wall s':>8}  test")
    for key, (n, cpu, wall) in sorted(by_test.items(), key=lambda item: -item[1][1])[:args.top]:
        print(f"{n:>9} {cpu:>8.1f} {wall:>8.1f}  {key}")


if __name__ == "__main__":
    main()
