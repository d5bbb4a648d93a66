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


def weights_table() -> str:
    """Markdown table of every registered weight set.

    Example:
        >>> "| `RegNetY032` | `imagenet` |" in weights_table()
        True
    """
    from keras_regnet.weights import list_weights

    lines = [
        "| model | tag | reported top-1 | eval transform | licence | downloaded from |",
        "|---|---|---:|---|---|---|",
    ]
    for ws in list_weights(print_table=False):
        t = ws.transform
        top1 = f"{ws.top1:.3f}" if ws.top1 is not None else "not recorded"
        where = ", then ".join(f"[{d.source}]({d.url})" for d in ws.downloads)
        lines.append(f"| `{ws.model}` | `{ws.tag}` | {top1} | resize {t.resize}, crop {t.crop}, "
                     f"{t.interpolation} | {ws.license} | {where} |")
    return "\n".join(lines) + "\n"


REGIONS = {"model table": model_table, "weights table": weights_table}
GENERATED_DOCS = {"README.md": ("model table",), "docs/models.md": ("model table",),
                  "docs/weights.md": ("weights table",)}


def markers(region: str) -> tuple[str, str]:
    return (f"<!-- BEGIN GENERATED: {region} (python -m keras_regnet.tables --write) -->",
            f"<!-- END GENERATED: {region} -->")


def replace_generated(text: str, region: str, table: str) -> str:
    """Replaces the region between a document's BEGIN/END markers with ``table``."""
    begin, end = markers(region)
    if begin not in text or end not in text:
        raise ValueError(f"document lacks the markers {begin!r} ... {end!r}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{table}{end}{tail}"


def render(text: str, regions: tuple[str, ...]) -> str:
    for region in regions:
        text = replace_generated(text, region, REGIONS[region]())
    return text


def main() -> None:
    import argparse
    import pathlib

    parser = argparse.ArgumentParser(description="Print or rewrite the generated tables.")
    parser.add_argument("--write", action="store_true", help=f"rewrite {', '.join(GENERATED_DOCS)}")
    args = parser.parse_args()
    if not args.write:
        print(model_table(), end="")
        return
    root = pathlib.Path(__file__).resolve().parent.parent
    for doc, regions in GENERATED_DOCS.items():
        path = root / doc
        path.write_text(render(path.read_text(encoding="utf-8"), regions), encoding="utf-8")
        print(f"rewrote {path}")


if __name__ == "__main__":
    main()
