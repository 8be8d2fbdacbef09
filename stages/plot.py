"""Stage: draw the training curves and the base-vs-tuned bars as PNGs.

Reads metrics/train/ (DVCLive) and metrics/eval.json; writes reports/plots/.
The folder is replaced whole, so a stale plot from an earlier run (say, a
grad_norm.png the current logger no longer produces) never lingers.
"""

from pathlib import Path

from tunelab import io, params, plotting, stage

LIVE_DIR = Path("metrics/train")
EVAL_METRICS = Path("metrics/eval.json")
PLOTS_DIR = Path("reports/plots")


def main() -> int:
    plot_params = params.load("plot")
    with io.atomic_path(PLOTS_DIR) as staging_dir:
        staging_dir.mkdir()
        written = plotting.plot_training_curves(LIVE_DIR, staging_dir, dpi=plot_params.dpi)
        if EVAL_METRICS.exists():
            bars = plotting.plot_base_vs_tuned(io.read_json(EVAL_METRICS),
                                               staging_dir / "base_vs_tuned.png", dpi=plot_params.dpi)
            if bars:
                written.append(bars)
        else:
            print(f"plot: {EVAL_METRICS} not found; skipping base_vs_tuned.png")
        names = sorted(path.name for path in written)

    if names:
        print(f"plot: wrote {', '.join(names)} to {PLOTS_DIR}/")
    else:
        print(f"plot: no data found under {LIVE_DIR} or in {EVAL_METRICS}; {PLOTS_DIR}/ is empty")
    return 0


if __name__ == "__main__":
    stage.run(main, "plot")
