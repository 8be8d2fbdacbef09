"""tunelab.report: results people would rather see than read.

Owns the PNG plots of training curves (the SFT run's and the alignment's),
base-vs-tuned(-vs-aligned) bars and the general-ability bars (plotting), the one
self-contained HTML report (html_page) with its General ability section and the names of
the general-ability categories it and the plot show (general_section), its Judge section
(judge_section) and the number formats they share (cells), and the one Jinja environment
(templating) over the templates that it and the sweep report use (templates/). May import
tunelab.eval (metric directions), tunelab.config, tunelab.util and tunelab.errors.
"""
