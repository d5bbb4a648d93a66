"""Markdown tables generated from the variants table (docs and README never type numbers)."""

from __future__ import annotations

from keras_regnet.design.complexity import count
from keras_regnet.variants import VARIANTS


def model_table() -> str:
    """Markdown table of every named model with its exact complexity at 224x224.

    Example:
        >>> model_table().splitlines()[0].startswith("| builder")
        True
    """
    lines = [
        "| builder | reference name | GFLOPs (MACs) | params | activations | stage widths | "
        "stage depths | group width | SE | rounding |",
        "|---|---|---:|---:|---:|---|---|---:|---|---|",
    ]
    for name, v in VARIANTS.items():
        cx = count(v.spec)
        s = v.spec
        lines.append(
            f"| `{name}` | {v.paper_name} | {cx['flops'] / 1e9:.3f} | {cx['params']:,} | "
            f"{cx['acts']:,} | {'/'.join(map(str, s.widths))} | {'/'.join(map(str, s.depths))} | "
            f"{s.group_width} | {'yes' if s.se_ratio else 'no'} | {s.rounding} |"
        )
    return "\n".join(lines) + "\n"


BEGIN = "<!-- BEGIN GENERATED: model table (python -m keras_regnet.tables --write) -->"
END = "<!-- END GENERATED: model table -->"


def replace_generated(text: str, table: str) -> str:
    """Replaces the region between the BEGIN/END markers of a document with ``table``."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"document lacks the markers {BEGIN!r} ... {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}{END}{tail}"


GENERATED_DOCS = ("README.md", "docs/models.md")


def main() -> None:
    import argparse
    import pathlib

    parser = argparse.ArgumentParser(description="Print or rewrite the generated model tables.")
    parser.add_argument("--write", action="store_true", help=f"rewrite {', '.join(GENERATED_DOCS)}")
    args = parser.parse_args()
    if not args.write:
        print(model_table(), end="")
        return
    root = pathlib.Path(__file__).resolve().parent.parent
    for doc in GENERATED_DOCS:
        path = root / doc
        path.write_text(replace_generated(path.read_text(encoding="utf-8"), model_table()),
                        encoding="utf-8")
        print(f"rewrote {path}")


if __name__ == "__main__":
    main()
