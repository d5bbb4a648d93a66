"""Everything generated from the variants and weights tables: docs tables and builders.

The README and docs never type a number the tables know, and ``applications.py`` holds one
real builder definition per variant; ``python -m keras_regnet.tables --write`` rewrites them
all, and a test fails while any of them is stale.
"""

from __future__ import annotations

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


def _top1_cell(ws) -> str:
    return f"{ws.top1:.3f}" if ws.top1 is not None else "not recorded"


def weights_table() -> str:
    """Markdown table of every registered weight set.

    Example:
        >>> "| `RegNetY032` | `imagenet` |" in weights_table()
        True
    """
    lines = [
        "| model | tag | reported top-1 | eval transform | licence | downloaded from |",
        "|---|---|---:|---|---|---|",
    ]
    for ws in list_weights(print_table=False):
        t = ws.transform
        where = ", then ".join(f"[{d.source}]({d.url})" for d in ws.downloads)
        lines.append(f"| `{ws.model}` | `{ws.tag}` | {_top1_cell(ws)} | resize {t.resize}, crop {t.crop}, "
                     f"{t.interpolation} | {ws.license} | {where} |")
    return "\n".join(lines) + "\n"


def preset_table() -> str:
    """Markdown table of the KerasHub preset of every weight set, with its licence.

    Example:
        >>> "| `regnety032_imagenet` |" in preset_table()
        True
    """
    lines = [
        "| preset | model | weights | reported top-1 | input | licence | write it |",
        "|---|---|---|---:|---|---|---|",
    ]
    for ws in list_weights(print_table=False):
        opt_in = " --allow-non-commercial" if ws.non_commercial else ""
        lines.append(f"| `{ws.preset_name}` | `{ws.model}` | `{ws.tag}` | {_top1_cell(ws)} | "
                     f"{ws.transform.crop}x{ws.transform.crop} | {ws.license} | `keras-regnet preset "
                     f"--model {ws.model} --weights {ws.tag} --output {ws.preset_name}{opt_in}` |")
    return "\n".join(lines) + "\n"


def builder_definitions() -> str:
    """The named builders of ``applications.py``: one real definition per variant."""
    return "".join(f'{name} = _named_builder(RegNet, "{name}")\n' for name in VARIANTS)


def builder_imports() -> str:
    """The package's import of every named builder (``keras_regnet/__init__.py``)."""
    names = "".join(f"    {name},\n" for name in VARIANTS)
    return f"from keras_regnet.applications import (  # noqa: F401 (public API)\n{names})\n"


REGIONS = {"model table": model_table, "weights table": weights_table, "preset table": preset_table,
           "builders": builder_definitions, "builder imports": builder_imports}
# Every generated region, by file (relative to the repository root).
GENERATED_FILES = {"README.md": ("model table",), "docs/models.md": ("model table",),
                   "docs/weights.md": ("weights table",), "docs/kerashub.md": ("preset table",),
                   "keras_regnet/applications.py": ("builders",),
                   "keras_regnet/__init__.py": ("builder imports",)}


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
