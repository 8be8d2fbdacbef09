"""tunelab.ui: `tunelab ui`, the lab in a browser: a local web app (FastAPI + uvicorn,
server-rendered jinja2 pages with a little vanilla JavaScript) over the same state the
CLI reads. It owns the pages and nothing else: the run table (runs), the comparison of
runs (compare), the launch form and live progress (launch), the chat playground
(playground), the model registry (registry_pages), the data analysis (data_pages), what
they share (pages: templates, errors, forms) and the app with its access rules (app).

It keeps no state of its own (no database, no second copy of a run): Git, DVC and GTO are
read and written only through tunelab.experiments (repo, registry, compare_runs), models
are served by tunelab.serve's engines, and the API key rules are tunelab.serve.server's.
May import tunelab.experiments, serve, report, eval, data, models, chat, config, util and
errors; never tunelab.cli, which imports it.
"""
