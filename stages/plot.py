"""Stage: draw the training curves and the base-vs-tuned bars as PNGs.

Usage (dvc.yaml): python stages/plot.py LIVE_DIR EVAL_METRICS PLOTS_DIR
Reads LIVE_DIR (DVCLive's curves under LIVE_DIR/plots) and EVAL_METRICS; writes
PLOTS_DIR. The folder is replaced whole, so a stale plot from an earlier run (say, a
grad_norm.png the current logger no longer produces) never lingers.
"""

from pathlib import Path

from tunelab import pipeline
from tunelab.config import params
from tunelab.report import plotting
from tunelab.util import files


def main(live_dir: str, eval_metrics: str, plots_dir: str) -> int:
    plot_params = params.load("plot")
    with files.atomic_path(plots_dir) as staging_dir:
        staging_dir.mkdir()
        written = plotting.plot_training_curves(live_dir, staging_dir, dpi=plot_params.dpi)
        if Path(eval_metrics).exists():
            bars = plotting.plot_base_vs_tuned(files.read_json(eval_metrics),
                                               staging_dir / "base_vs_tuned.png",
                                               dpi=plot_params.dpi)
            if bars:
                written.append(bars)
        else:
            print(f"plot: {eval_metrics} not found; skipping base_vs_tuned.png")
        names = sorted(path.name for path in written)

    if names:
        print(f"plot: wrote {', '.join(names)} to {plots_dir}/")
    else:
        print(f"plot: no data found under {live_dir} or in {eval_metrics}; {plots_dir}/ is empty")
    return 0


if __name__ == "__main__":
    pipeline.run(main, "plot")
