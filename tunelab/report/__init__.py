"""tunelab.report: results people would rather see than read.

Owns the PNG plots of training curves (the SFT run's and the alignment's) and
base-vs-tuned(-vs-aligned) bars (plotting), the one self-contained HTML report
(html_page), and the one Jinja environment (templating) over the templates that it and the
sweep report use (templates/). May import tunelab.eval (metric directions), tunelab.config,
tunelab.util and tunelab.errors.
"""
