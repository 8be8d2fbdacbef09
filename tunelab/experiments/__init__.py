"""tunelab.experiments: everything that runs or judges whole runs as Git commits and DVC
experiments. It owns the one Git/DVC/GTO layer (``repo``: every git, dvc and gto call in
tunelab goes through it), hyperparameter sweeps (``sweep_space`` the search space,
``sweep`` the runner, ``sweep_record`` a sweep's record, ``sweep_report`` the ranking and
HTML), ``check`` (the regression gate of `tunelab check`), ``watch`` and ``promotion``
(continuous learning: ingest, run, promote with a GTO version), ``verify`` (`tunelab
verify-repro`) and ``compare_runs`` (`tunelab compare-runs`). It may import tunelab.eval,
report, train, data, config, util and errors; never tunelab.cli, which imports it."""
