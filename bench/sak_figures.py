"""Figures of bench/sak.py (drawn after its JSON and Markdown are written): test scenes with each
task's prediction beside the ground truth, and the router gates per task."""

from __future__ import annotations

import numpy as np

from genba.sak import pipeline as P


def scene_figure(model, scenes, path, count=4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outputs, _ = P.predict_outputs(model, scenes.images[:count])
    cols = ["image", "semantic GT", "semantic", "boundary GT", "boundary", "saliency GT", "saliency", "depth GT", "depth"]
    fig, axes = plt.subplots(count, len(cols), figsize=(1.6 * len(cols), 1.7 * count))
    for i in range(count):
        panels = [scenes.images[i].permute(1, 2, 0).numpy(), scenes.semantic[i], outputs["semantic"][i].argmax(0),
                  scenes.boundary[i], outputs["boundary"][i, 0].sigmoid() >= 0.5, scenes.saliency[i],
                  outputs["saliency"][i, 0].sigmoid(), scenes.depth[i], outputs["depth"][i, 0]]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            kwargs = {} if j == 0 else ({"cmap": "tab10", "vmin": 0, "vmax": 9} if j in (1, 2) else
                                        {"cmap": "viridis", "vmin": 0, "vmax": 1} if j >= 7 else {"cmap": "gray", "vmin": 0, "vmax": 1})
            ax.imshow(np.asarray(panel, dtype=np.uint8 if j == 0 else np.float32), **kwargs)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
    fig.suptitle("SAK student (seed 0) on test composites: prediction beside ground truth", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gate_figure(gates, representations, path, seeds=3):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(gates)
    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.8 / len(representations)
    for r, name in enumerate(representations):
        ax.bar(np.arange(len(tasks)) + r * width, [gates[t][r] for t in tasks], width, label=name)
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks)
    ax.set_ylabel("mean gate weight (test)")
    ax.axhline(1 / len(representations), color="k", lw=0.5, ls="--")
    ax.legend(fontsize=7)
    ax.set_title(f"SAK MoR router: mean gate per task over the representations ({seeds} seed(s))", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
