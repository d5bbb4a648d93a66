"""Plots (PNG, matplotlib imported lazily) and an HTML report comparing design spaces."""

from __future__ import annotations

import base64
import html
import os

import numpy as np

from keras_regnet.design import analysis

PARAMETERS = {  # parameter -> how to read it from a record, for error-vs-parameter plots
    "depth": lambda r: r.get("depth", sum(r.get("depths", [0]))),
    "wm": lambda r: r.get("wm"),
    "w0": lambda r: r.get("w0"),
    "wa": lambda r: r.get("wa"),
    "group_width": lambda r: r.get("group_width", (r.get("group_widths") or [None])[0]),
    "flops": lambda r: r["flops"],
}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("Plots need matplotlib: pip install 'keras-regnet[sweep]'") from err
    return plt


def _grid(records_by_space) -> np.ndarray:
    errors = np.concatenate([[r["error"] for r in rs] for rs in records_by_space.values()])
    return np.linspace(errors.min() - 1, errors.max() + 1, 200)


def plot_edfs(records_by_space: dict[str, list[dict]], path: str) -> str:
    """Error EDFs (plain and complexity-normalised) of several spaces."""
    plt = _pyplot()
    grid = _grid(records_by_space)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, recs in records_by_space.items():
        axes[0].plot(grid, analysis.edf([r["error"] for r in recs], grid), label=f"{name} (n={len(recs)})")
    if len(records_by_space) > 1:
        try:
            normed = analysis.normalized_edfs(
                {n: ([r["error"] for r in rs], [r["flops"] for r in rs])
                 for n, rs in records_by_space.items()}, grid)
        except ValueError as err:  # disjoint complexity ranges: nothing to normalise against
            normed = {}
            axes[1].text(0.5, 0.5, str(err), ha="center", va="center", wrap=True,
                         transform=axes[1].transAxes)
        for name, curve in normed.items():
            axes[1].plot(grid, curve, label=name)
    axes[0].set_title("error EDF")
    axes[1].set_title("error EDF, complexity-normalised")
    for ax in axes:
        ax.set_xlabel("top-1 error (%)")
        ax.set_ylabel("cumulative prob.")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_parameter(records: list[dict], parameter: str, path: str) -> tuple[str, analysis.GoodRange]:
    """Error vs one parameter, with the bootstrap good range shaded."""
    plt = _pyplot()
    get = PARAMETERS[parameter]
    pairs = [(get(r), r["error"]) for r in records if get(r) is not None]
    values, errors = np.array(pairs, float).T
    good = analysis.bootstrap_good_range(values, errors)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.axvspan(good.low, good.high, color="tab:orange", alpha=0.2, label="bootstrap 95% range")
    ax.axvline(good.median, color="tab:orange")
    ax.scatter(values, errors, s=12)
    ax.set_xlabel(parameter)
    ax.set_ylabel("top-1 error (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, good


def plot_fits(records: list[dict], path: str, most: int = 6) -> str:
    """Per-block widths of the best models with their quantized-linear fits."""
    from keras_regnet.design.sampling import spec_from_record

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for rec in sorted(records, key=lambda r: r["error"])[:most]:
        widths = [b.out_width for b in spec_from_record(rec).blocks()]
        fit = analysis.fit_quantized_linear(widths)
        j = np.arange(len(widths))
        line = ax.step(j, widths, where="post", label=f"err {rec['error']:.1f}, e_fit {fit.e_fit:.3f}")
        ax.plot(j, fit.w0 + fit.wa * j, "--", color=line[0].get_color(), alpha=0.6)
    ax.set_yscale("log")
    ax.set_xlabel("block j")
    ax.set_ylabel("width")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(records_by_space: dict[str, list[dict]], out_dir: str) -> str:
    """Writes the plots and ``report.html`` (images embedded) into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    sections = []
    edf_png = plot_edfs(records_by_space, os.path.join(out_dir, "edf.png"))
    sections.append(("Error EDFs", edf_png, ""))
    rows = []
    for name, recs in records_by_space.items():
        errors = np.array([r["error"] for r in recs])
        mflops = np.mean([r["flops"] for r in recs]) / 1e6
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{len(recs)}</td><td>{errors.min():.2f}</td>"
                    f"<td>{np.median(errors):.2f}</td><td>{mflops:.0f}</td></tr>")
        params = ["depth", "flops"] + (["wm", "w0", "wa", "group_width"] if "w0" in recs[0] else [])
        for parameter in params:
            png, good = plot_parameter(recs, parameter, os.path.join(out_dir, f"{name}_{parameter}.png"))
            sections.append((f"{name}: error vs {parameter}", png,
                             f"good range {good.low:.3g} .. {good.high:.3g} (median {good.median:.3g})"))
        if "w0" in recs[0] or "widths" in recs[0]:
            png = plot_fits(recs, os.path.join(out_dir, f"{name}_fits.png"))
            sections.append((f"{name}: widths of the best models and their linear fits", png, ""))
    body = ["<h1>Design-space comparison</h1>",
            "<table border=1 cellpadding=4><tr><th>space</th><th>models</th><th>best error</th>"
            "<th>median error</th><th>mean MFLOPs</th></tr>", *rows, "</table>"]
    for title, png, note in sections:
        data = base64.b64encode(open(png, "rb").read()).decode("ascii")
        body.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(note)}</p>"
                    f"<img src='data:image/png;base64,{data}'>")
    path = os.path.join(out_dir, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write("<!doctype html><meta charset='utf-8'><title>keras_regnet sweep</title>\n"
                + "\n".join(body) + "\n")
    return path
