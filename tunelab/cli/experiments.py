"""Experiment commands: `tunelab sweep`, `lr-test`, `sweep-report`, `check` (the regression
gate), `verify-repro` and `compare-runs`."""

from __future__ import annotations

from pathlib import Path

from tunelab.cli.arg_types import learning_rates, parse_sets
from tunelab.config import params
from tunelab.experiments import check, sweep, sweep_report, verify


def register(commands) -> None:
    run_cmd = commands.add_parser("sweep", help="hyperparameter sweep from a sweep file: every "
                                  "trial a DVC experiment; writes reports/sweep.html")
    run_cmd.add_argument("file", type=Path, help="sweep file, e.g. sweeps/lr_rank.yaml")
    run_cmd.add_argument("--set", action="append", metavar="KEY=VALUE",
                         help="params every trial gets, on top of the file's `set:` (repeatable)")
    run_cmd.add_argument("--max-trials", type=int, help="override max_trials")
    run_cmd.add_argument("--parallel", type=int, help="override parallel")
    run_cmd.add_argument("--dry-run", action="store_true", help="list the trials, run nothing "
                         "(skypilot: print each job's exact command and task)")
    run_cmd.add_argument("--launcher", choices=("local", "skypilot"), default="local",
                         help="local: the DVC queue here (default); skypilot: one cloud job "
                              "per trial (launch/skypilot/train.yaml), results pushed back as "
                              "DVC experiments (sweep-report --pull)")
    run_cmd.set_defaults(handler=run_sweep)

    lr = commands.add_parser("lr-test", help="quick learning-rate test: a few short runs over "
                             f"a list of rates ({sweep.LR_TEST_FILE})")
    lr.add_argument("--rates", type=learning_rates,
                    help="comma-separated, e.g. 1e-4,3e-4,1e-3,3e-3")
    lr.add_argument("--steps", type=int, help="optimizer steps per run (train.max_steps)")
    lr.add_argument("--file", default=sweep.LR_TEST_FILE, help="the preset sweep file")
    lr.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    lr.set_defaults(handler=run_lr_test)

    report = commands.add_parser("sweep-report", help="rank a sweep's trials, plot the metric "
                                 "against each param, write reports/sweep.html")
    report.add_argument("--sweep", default=None, help="sweep id, e.g. lr_rank-1 "
                        "(default: the latest in reports/sweeps/)")
    report.add_argument("--output", default=sweep_report.DEFAULT_OUTPUT, type=Path)
    report.add_argument("--apply-best", action="store_true",
                        help="bring the best trial into the workspace (dvc exp apply)")
    report.add_argument("--pull", action="store_true",
                        help="first pull the trials that are not in yet from origin (dvc exp "
                             "pull origin NAME): cloud runs push their experiments there")
    report.set_defaults(handler=report_sweep)

    gate = commands.add_parser("check", help="regression gate: fail when a metric in params.yaml "
                               "`check:` is worse than at --baseline by more than its tolerance")
    gate.add_argument("--baseline", default="HEAD", help="git revision to compare with "
                      "(default: HEAD; in CI e.g. origin/main)")
    gate.add_argument("--params", default=params.PARAMS_FILE, help="file with the `check:` section")
    gate.set_defaults(handler=check_metrics)

    verify = commands.add_parser("verify-repro", help="rerun train + evaluate in a scratch "
                                 "folder and compare the metrics with this workspace's")
    verify.add_argument("--tolerance", type=float, default=0.0,
                        help="relative difference allowed per metric (default 0: exact)")
    verify.add_argument("--workdir", type=Path, default=None,
                        help="scratch folder to use and keep (default: a temp folder, removed)")
    verify.set_defaults(handler=verify_repro)

    compare = commands.add_parser("compare-runs", help="paired per-example comparison of two "
                                  "runs' test answers, with bootstrap confidence intervals")
    compare.add_argument("a", help="samples file, git revision or DVC experiment name")
    compare.add_argument("b", help="the same for the other run; differences are B - A")
    # default None, not compare_runs.METRICS: importing compare_runs loads the scorers
    # (rouge, nltk), seconds that every `tunelab` call would pay.
    compare.add_argument("--metrics", default=None,
                         help="comma-separated: task_accuracy, json_valid, exact_match, "
                              "field_NAME; the first decides the exit code with --margin")
    compare.add_argument("--margin", type=float, default=None,
                         help="equivalence margin, e.g. 0.05: exit 1 when the first metric's "
                              "interval lies wholly outside ±margin")
    compare.set_defaults(handler=compare_two_runs)


def run_sweep(args) -> int:
    sets = parse_sets(args.set) if args.set else None
    return sweep.sweep(args.file, sets=sets, max_trials=args.max_trials, parallel=args.parallel,
                       dry_run=args.dry_run, launcher=args.launcher)


def run_lr_test(args) -> int:
    return sweep.lr_test(args.file, rates=args.rates, steps=args.steps, dry_run=args.dry_run)


def report_sweep(args) -> int:
    return sweep_report.report(args.sweep, args.output, apply_best=args.apply_best,
                               pull=args.pull)


def check_metrics(args) -> int:
    return check.check(args.baseline, args.params)


def verify_repro(args) -> int:
    return verify.verify_repro(args.tolerance, args.workdir)


def compare_two_runs(args) -> int:
    from tunelab.experiments import compare_runs

    metrics = compare_runs.METRICS if args.metrics is None else \
        [name.strip() for name in args.metrics.split(",") if name.strip()]
    return compare_runs.compare_runs(args.a, args.b, metrics=metrics, margin=args.margin)
