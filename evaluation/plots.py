"""Matplotlib figures (t-SNE scatter, kNN accuracy, loss curves, active-unit variances), written atomically.

Image grids (samples, reconstructions) are `training.figures.save_grid`; these are the plots with axes.
"""

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from zoo import atomic  # noqa: E402


def _save(figure, path):
    with atomic.write_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)


def scatter_by_label(points, labels, path, title):
    """2-d points coloured by integer label, one legend entry per class."""
    figure, axis = plt.subplots(figsize=(6, 6))
    classes = np.unique(labels)
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, label in enumerate(classes):
        chosen = labels == label
        axis.scatter(points[chosen, 0], points[chosen, 1], s=4, color=colours(i % colours.N), label=str(label))
    axis.set_title(title)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(markerscale=3, fontsize=7, loc="best", ncol=2)
    _save(figure, path)


def lines(series, path, title, xlabel, ylabel, marker=None):
    """One line per entry of `series` {name: (x, y)}."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, (x, y) in series.items():
        axis.plot(x, y, marker=marker, label=name)
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    _save(figure, path)


def panels(groups, path, xlabel):
    """A row of panels, one per entry of `groups` {panel title: {line name: (x, y)}}."""
    figure, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.6), squeeze=False)
    for axis, (title, series) in zip(axes[0], groups.items()):
        for name, (x, y) in series.items():
            axis.plot(x, y, label=name)
        axis.set_title(title)
        axis.set_xlabel(xlabel)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    _save(figure, path)


def variances(values, threshold, path, title):
    """Per-dimension variance of the posterior mean on a log axis, with the active-unit threshold."""
    figure, axis = plt.subplots(figsize=(6, 3.5))
    order = np.argsort(values)[::-1]
    values = np.maximum(np.asarray(values)[order], 1e-12)
    axis.bar(np.arange(len(values)), values, color=["tab:blue" if v > threshold else "tab:grey" for v in values])
    axis.axhline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold}")
    axis.set_yscale("log")
    axis.set_xlabel("latent dimension (sorted)")
    axis.set_ylabel("Var over test set of E[z | x]")
    axis.set_title(title)
    axis.legend(fontsize=8)
    _save(figure, path)
