"""tunelab.report: results people would rather see than read.

Owns the PNG plots of training curves (the SFT run's and the alignment's),
base-vs-tuned(-vs-aligned) bars and the general-ability bars (plotting), the names of the
general-ability categories both show (general_ability), the one self-contained HTML report
with its General ability and Judge sections (html_page), and the one Jinja environment
(templating) over the templates that it and the sweep report use (templates/). May import
tunelab.eval (metric directions), tunelab.config, tunelab.util and tunelab.errors.
"""
