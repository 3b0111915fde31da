"""The figures pinzi draws (PNG, with matplotlib's Agg backend: no display needed).

Training curves (every run), the fine-tuning report's bars, and a classifier's confusion
matrix. matplotlib is imported when a figure is drawn, never at start-up.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history_path: Path, png_path: Path, metric: str) -> None:
    """Loss (train and valid) and the validation metric against steps."""
    plt = _pyplot()
    rows = [json.loads(r) for r in history_path.read_text().splitlines() if r]
    train_rows = [r for r in rows if "loss" in r]
    valid_rows = [r for r in rows if f"valid_{metric}" in r]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label="train")
    ax_loss.plot([r["step"] for r in valid_rows], [r["valid_loss"] for r in valid_rows], "o-",
                 label="valid")
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_loss.legend()
    ax_metric.plot([r["step"] for r in valid_rows], [r[f"valid_{metric}"] for r in valid_rows],
                   "o-")
    ax_metric.set(xlabel="step", ylabel=metric, title=f"validation {metric}")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def plot_report(report: dict, path: Path) -> None:
    """Bars of char accuracy and exact match, base against fine-tuned, per test set."""
    plt = _pyplot()
    rows = report["tests"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = [f"{r['kind']}:\n{r['name']}" for r in rows]
    x = range(len(rows))
    for ax, metric, title in zip(axes, ("char_acc", "exact"), ("char accuracy", "exact match"),
                                 strict=True):
        for offset, when, label in ((-0.2, "before", "base"),
                                    (0.2, "after", f"fine-tuned ({report['mode']})")):
            values = [r[when][metric] for r in rows]
            bars = ax.bar([i + offset for i in x], values, width=0.4, label=label)
            ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], fontsize=8)
        ax.set_xticks(list(x), names, fontsize=8)
        ax.set(title=title, ylim=(0, 1.25))
        ax.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@functools.cache
def _cjk_font() -> str | None:
    """A font with Chinese glyphs that matplotlib can use (registering a system one), or None."""
    from matplotlib import font_manager

    known = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei",
             "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC",
             "Droid Sans Fallback", "AR PL UMing CN")
    have = {f.name for f in font_manager.fontManager.ttflist}
    for name in known:
        if name in have:
            return name
    hints = ("notosanscjk", "sourcehansans", "wqy", "simhei", "msyh", "pingfang",
             "droidsansfallback", "uming")
    for path in font_manager.findSystemFonts():
        if any(h in Path(path).name.lower().replace("-", "") for h in hints):
            try:
                font_manager.fontManager.addfont(path)
                return font_manager.FontProperties(fname=path).get_name()
            except (OSError, RuntimeError, ValueError):
                continue
    return None


def plot_confusion(matrix: Sequence[Sequence[int]], label_names: Sequence[str],
                   png_path: str | Path, title: str = "confusion matrix") -> None:
    """The confusion matrix as a PNG: colour = share of the gold row, numbers = counts.

    Label names with Chinese characters need a CJK font; without one the axes show indices.
    """
    plt = _pyplot()
    matrix = np.asarray(matrix)
    n = len(label_names)
    names = list(label_names)
    font = None
    if any(not name.isascii() for name in names):
        font = _cjk_font()
        if font is None:
            names = [str(i) for i in range(n)]
    rows = matrix / np.maximum(1, matrix.sum(1, keepdims=True))
    size = max(4.0, 0.45 * n + 2.5)
    with plt.rc_context({"font.sans-serif": [font, "DejaVu Sans"]} if font else {}):
        fig, ax = plt.subplots(figsize=(size + 1, size))
        image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the gold class")
        ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="gold", title=title)
        ax.set_xticklabels(names, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
        ax.set_yticklabels(names)
        if n <= 30:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rows[i, j] > 0.5 else "black")
        fig.tight_layout()
        fig.savefig(png_path, dpi=100)
        plt.close(fig)
