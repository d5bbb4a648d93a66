"""Everything generated from the variants and weights tables: docs tables and builders.

The README and docs never type a number the tables know, and ``applications.py`` holds one
real builder definition per variant; ``python -m keras_regnet.tables --write`` rewrites them
all, and a test fails while any of them is stale.
"""

from __future__ import annotations

from typing import Callable

from keras_regnet.design.complexity import count
from keras_regnet.variants import VARIANTS
from keras_regnet.weight_table import list_weights


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


def _markdown(columns: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; a column named ``"name:"`` is right-aligned."""
    header = "| " + " | ".join(c.rstrip(":") for c in columns) + " |"
    rule = "|" + "|".join("---:" if c.endswith(":") else "---" for c in columns) + "|"
    return "\n".join([header, rule, *("| " + " | ".join(row) + " |" for row in rows)]) + "\n"


def _top1_cell(ws) -> str:
    return f"{ws.top1:.3f}" if ws.top1 is not None else "not recorded"


# Every column a weights table can have: heading -> the cell of one weight set.
_CELLS: dict[str, Callable] = {
    "model": lambda ws: f"`{ws.model}`",
    "tag": lambda ws: f"`{ws.tag}`",
    "weights": lambda ws: f"`{ws.tag}`",
    "preset": lambda ws: f"`{ws.preset_name}`",
    "reported top-1:": _top1_cell,
    "eval transform": lambda ws: (f"resize {ws.transform.resize}, crop {ws.transform.crop}, "
                                  f"{ws.transform.interpolation}"),
    "input": lambda ws: f"{ws.transform.crop}x{ws.transform.crop}",
    "licence": lambda ws: ws.license,
    "downloaded from": lambda ws: ", then ".join(f"[{d.source}]({d.url})" for d in ws.downloads),
    "write it": lambda ws: (f"`keras-regnet preset --model {ws.model} --weights {ws.tag} --output "
                            f"{ws.preset_name}{' --allow-non-commercial' if ws.non_commercial else ''}`"),
}


def _weights_markdown(*columns: str) -> str:
    """One row per weight set, with the named columns of ``_CELLS``."""
    rows = [[_CELLS[c](ws) for c in columns] for ws in list_weights(print_table=False)]
    return _markdown(list(columns), rows)


def weights_table() -> str:
    """Markdown table of every registered weight set.

    Example:
        >>> "| `RegNetY032` | `imagenet` |" in weights_table()
        True
    """
    return _weights_markdown("model", "tag", "reported top-1:", "eval transform", "licence",
                             "downloaded from")


def preset_table() -> str:
    """Markdown table of the KerasHub preset of every weight set, with its licence.

    Example:
        >>> "| `regnety032_imagenet` |" in preset_table()
        True
    """
    return _weights_markdown("preset", "model", "weights", "reported top-1:", "input", "licence", "write it")


def builder_definitions() -> str:
    """The named builders of ``applications.py``: one real definition per variant."""
    return "".join(f'{name} = _named_builder(RegNet, "{name}")\n' for name in VARIANTS)


def builder_imports() -> str:
    """The package's import of every named builder (``keras_regnet/keras_side.py``)."""
    names = "".join(f"    {name},\n" for name in sorted(VARIANTS))  # in the linter's order
    return f"from keras_regnet.applications import (  # noqa: F401 (public API)\n{names})\n"


REGIONS = {"model table": model_table, "weights table": weights_table, "preset table": preset_table,
           "builders": builder_definitions, "builder imports": builder_imports}
# Every generated region, by file (relative to the repository root).
GENERATED_FILES = {"README.md": ("model table",), "docs/models.md": ("model table",),
                   "docs/weights.md": ("weights table",), "docs/kerashub.md": ("preset table",),
                   "keras_regnet/applications.py": ("builders",),
                   "keras_regnet/keras_side.py": ("builder imports",)}


TABLES_COMMAND = "python -m keras_regnet.tables --write"


def markers(region: str, python: bool = False, command: str = TABLES_COMMAND) -> tuple[str, str]:
    """The BEGIN/END lines around a generated region: HTML comments, or ``#`` in Python."""
    begin, end = f"BEGIN GENERATED: {region} ({command})", f"END GENERATED: {region}"
    return (f"# {begin}", f"# {end}") if python else (f"<!-- {begin} -->", f"<!-- {end} -->")


def replace_generated(text: str, region: str, table: str, python: bool = False,
                      command: str = TABLES_COMMAND) -> str:
    """Replaces the region between a file's BEGIN/END markers with ``table``."""
    begin, end = markers(region, python, command)
    if begin not in text or end not in text:
        raise ValueError(f"document lacks the markers {begin!r} ... {end!r}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    indent = head[head.rfind("\n") + 1:]  # a region inside a Python block keeps its indent
    indent = indent if indent.isspace() else ""
    body = "".join(indent + line if line.strip() else line for line in table.splitlines(keepends=True))
    return f"{head}{begin}\n{body}{indent}{end}{tail}"


def render(text: str, regions: tuple[str, ...], python: bool = False) -> str:
    for region in regions:
        text = replace_generated(text, region, REGIONS[region](), python)
    return text


def main() -> None:
    import argparse
    import pathlib

    parser = argparse.ArgumentParser(description="Print or rewrite the generated tables.")
    parser.add_argument("--write", action="store_true", help=f"rewrite {', '.join(GENERATED_FILES)}")
    args = parser.parse_args()
    if not args.write:
        print(model_table(), end="")
        return
    root = pathlib.Path(__file__).resolve().parent.parent
    for name, regions in GENERATED_FILES.items():
        path = root / name
        text = render(path.read_text(encoding="utf-8"), regions, python=name.endswith(".py"))
        path.write_text(text, encoding="utf-8")
        print(f"rewrote {path}")


if __name__ == "__main__":
    main()
