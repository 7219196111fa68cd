"""shift_arcs.png: predicted against annotated calcium arc per frame, in distribution and shifted, side by side.

r and the mean error summarise the arc; the scatter shows how a model fails (calcium missed: points on the x axis;
arcs under-measured: points below the diagonal; calcium invented: points on the y axis).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ivus_tf.core.atomic import atomic_file

FIGURE_NAME = "shift_arcs.png"
STYLES = {"model": ("tab:blue", "o", "model"), "rule": ("tab:orange", "^", "rule")}


def _title(role: str, preset: str, summary: Mapping) -> str:
    arc = summary["calcium_arc"]["frames_with_calcium"]
    r = "n/a" if arc["pearson_r"] is None or arc["pearson_r"] != arc["pearson_r"] else f"{arc['pearson_r']:.2f}"
    error = arc["mean_absolute_error_deg"]
    error = "n/a" if error is None or error != error else f"{error:.0f}"
    return f"{role.replace('_', ' ')}: preset {preset}\nframes with calcium: r {r}, mean error {error} deg"


def write_arc_figure(out_dir, result: Mapping) -> Path:
    """Write shift_arcs.png into `out_dir` (atomically) from a shift.json-like `result`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = ("in_distribution", "shifted")
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.8), sharex=True, sharey=True)
    for ax, role in zip(axes, roles):
        for name, (colour, marker, label) in STYLES.items():
            rows = result["frames"][role].get(name)
            if not rows:
                continue
            ax.scatter([r["truth_calcium_arc_deg"] for r in rows], [r["calcium_arc_deg"] for r in rows], s=18,
                       c=colour, marker=marker, alpha=0.7, label=label, edgecolors="none")
        ax.plot([0, 360], [0, 360], color="0.5", lw=0.8, ls="--")
        ax.set_xlim(-10, 370)
        ax.set_ylim(-10, 370)
        ax.set_xticks(range(0, 361, 90))
        ax.set_yticks(range(0, 361, 90))
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.set_xlabel("annotated calcium arc (degrees)")
        ax.set_title(_title(role, result["test_sets"][role]["preset"], result["results"][role]["model"]),
                     fontsize=10)
    axes[0].set_ylabel("predicted calcium arc (degrees)")
    axes[0].legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    path = Path(out_dir) / FIGURE_NAME
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
