"""Stage: draw the training curves (and the alignment's), the base-vs-tuned bars, the
general-ability bars (eval.json's "general" block, when the evaluate stage wrote one) and the
token-length histogram as PNGs.

Usage (dvc.yaml): python stages/plot.py LIVE_DIR ALIGN_DIR EVAL_METRICS DATA_STATS PLOTS_DIR
Reads LIVE_DIR (DVCLive's curves under LIVE_DIR/plots), ALIGN_DIR (the align stage's, drawn
as align_*.png; it has no plots/ when alignment is off), EVAL_METRICS and DATA_STATS (the
prepare stage's metrics/data.json; each file optional); writes PLOTS_DIR. The folder is
replaced whole, so a stale plot from an earlier run (say, a grad_norm.png the current
logger no longer produces, or align_*.png after alignment was switched off) never lingers.
"""

from pathlib import Path

from tunelab import pipeline
from tunelab.config import params
from tunelab.report import plotting
from tunelab.util import files


def main(live_dir: str, align_dir: str, eval_metrics: str, data_stats: str, plots_dir: str) -> int:
    plot_params = params.load("plot")
    figures = [(eval_metrics, plotting.plot_base_vs_tuned, "base_vs_tuned.png"),
               (eval_metrics, plotting.plot_general, "general.png"),
               (data_stats, plotting.plot_token_lengths, "token_lengths.png")]
    with files.atomic_path(plots_dir) as staging_dir:
        staging_dir.mkdir()
        written = plotting.plot_training_curves(live_dir, staging_dir, dpi=plot_params.dpi)
        written += plotting.plot_training_curves(align_dir, staging_dir, dpi=plot_params.dpi,
                                                 figures=plotting.ALIGN_FIGURES)
        for metrics_file, plot, png_name in figures:
            if not Path(metrics_file).exists():
                print(f"plot: {metrics_file} not found; skipping {png_name}")
                continue
            png = plot(files.read_json(metrics_file), staging_dir / png_name, dpi=plot_params.dpi)
            if png:  # None: nothing in the file to draw
                written.append(png)
        names = sorted(path.name for path in written)

    if names:
        print(f"plot: wrote {', '.join(names)} to {plots_dir}/")
    else:
        print(f"plot: no data found under {live_dir}, {align_dir} or in {eval_metrics}; "
              f"{plots_dir}/ is empty")
    return 0


if __name__ == "__main__":
    pipeline.run(main, "plot")
