"""The picture in a bench report: quality against throughput, and what each layer kept.

Left: one point per model and backend (and per retrieval mode for bge-m3 models) at the headline grid point,
throughput on x and the headline quality metric on y, so "faster" is right and "better" is up.
Right (models that came from bgeprune): for every layer of the base, the share of attention heads
and FFN units kept; dropped layers are marked. Written with matplotlib's non-interactive backend.

Example:
    bgeprune bench out/smoke --compare builtin:tiny-xlm-roberta -o runs/bench-smoke   # -> report.png
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from ..pruning.masks import Layout

_MARKERS = {"dense": "o", "sparse": "s", "colbert": "^", "m3": "D"}
_COLOURS = {"model": "tab:blue", "base": "tab:gray"}
_OTHERS = ("tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:olive")  # other backends


def _colour(role: str, roles: list[str]) -> str:
    others = [r for r in roles if r not in _COLOURS]
    return _COLOURS.get(role) or _OTHERS[others.index(role) % len(_OTHERS)]


def _quality_panel(ax, points: list[dict], x_label: str, y_label: str) -> None:
    from matplotlib.lines import Line2D

    roles = list(dict.fromkeys(p["role"] for p in points))
    for p in points:
        ax.scatter(p["x"], p["y"], s=80, marker=_MARKERS.get(p["mode"], "o"), color=_colour(p["role"], roles),
                   edgecolor="black", zorder=3)
    dense = {p["role"]: p for p in points if p["mode"] == "dense"}
    for p in dense.values():
        ax.annotate(f"{p['label']}  {p['y']:.3f}", (p["x"], p["y"]), textcoords="offset points", xytext=(9, -3),
                    fontsize=8)
    if "model" in dense and "base" in dense:  # from the base to the pruned model
        ax.annotate("", (dense["model"]["x"], dense["model"]["y"]), (dense["base"]["x"], dense["base"]["y"]),
                    arrowprops={"arrowstyle": "->", "color": "tab:blue", "alpha": 0.6})
    xs = [p["x"] for p in points]
    ys = [p["y"] for p in points]
    ax.set_xlim(0, max(xs) * 1.4)
    span = (max(ys) - min(ys)) or max(abs(max(ys)), 1e-3)
    ax.set_ylim(min(ys) - 0.3 * span, max(ys) + 0.3 * span)
    handles = [Line2D([], [], marker=_MARKERS.get(mode, "o"), linestyle="", color="white", markeredgecolor="black",
                      label=mode) for mode in dict.fromkeys(p["mode"] for p in points)]
    handles += [Line2D([], [], marker="o", linestyle="", color=_colour(role, roles), label=label)
                for role, label in dict.fromkeys((p["role"], p["label"]) for p in points)]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title("Quality vs throughput (up and right is better)")
    ax.grid(alpha=0.3)


def _layers_panel(ax, layout: Layout) -> None:
    base = layout.base
    indices = list(range(base["layers"]))
    heads = [0.0] * len(indices)
    ffn = [0.0] * len(indices)
    for position, layer in enumerate(layout.layers):
        heads[layer] = 100 * len(layout.heads[position]) / base["heads"]
        ffn[layer] = 100 * len(layout.ffn[position]) / base["ffn"]
    width = 0.4
    ax.bar([i - width / 2 for i in indices], heads, width, label="attention heads kept", color="tab:orange")
    ax.bar([i + width / 2 for i in indices], ffn, width, label="FFN units kept", color="tab:green")
    for i in indices:
        if i not in layout.layers:
            ax.text(i, 3, "dropped", rotation=90, ha="center", va="bottom", fontsize=8, color="tab:red")
    ax.set_xticks(indices)
    ax.set_xlabel("layer of the base model")
    ax.set_ylabel("% of the base layer kept")
    ax.set_ylim(0, 125)
    ax.set_title(f"Kept architecture: {len(layout.layers)}/{base['layers']} layers, "
                 f"hidden {len(layout.hidden)}/{base['hidden']}")
    ax.legend(loc="upper center", ncol=2, fontsize=8)


def write_report_png(path: Path, points: list[dict], x_label: str, y_label: str, layout: Layout | None,
                     title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("quality", "layers") if (p == "quality" and points) or (p == "layers" and layout)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "quality":
            _quality_panel(ax, points, x_label, y_label)
        else:
            _layers_panel(ax, layout)
    fig.suptitle("\n".join(textwrap.wrap(title, 150)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
