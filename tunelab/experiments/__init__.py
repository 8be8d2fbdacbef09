"""tunelab.experiments: everything that runs or judges whole runs as Git commits and DVC
experiments. It owns the one Git/DVC/GTO layer (``repo``: every git and dvc call in tunelab
goes through it; ``registry``: every gto call, model versions and stages, and fetching a
version's files), hyperparameter sweeps (``sweep_space`` the search space, ``sweep`` the
runner, ``sweep_record`` a sweep's record, ``sweep_report`` the ranking and HTML,
``cloud_launch`` the trials as SkyPilot cloud jobs, run by its `sky` command), ``check``
(the regression gate of `tunelab check`), ``watch`` and ``promotion`` (continuous learning:
ingest, run, promote as a registry version), ``verify`` (`tunelab verify-repro`) and
``compare_runs`` (`tunelab compare-runs`). It may import tunelab.eval, report, train, models,
data, chat, config, util and errors; never tunelab.cli, which imports it."""
