"""`tunelab import-config`: another tool's training config (axolotl, LLaMA-Factory, the
guide's lora_config.yaml) into params.yaml, comments kept; with --sweep, the guide's
hp_search.yaml into a sweep file. The result is checked as `tunelab validate-config` (or
`tunelab sweep --dry-run`) checks it before it is written."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from tunelab.cli.arg_types import DEFAULT_BASE
from tunelab.cli.data import check_params_file
from tunelab.config import import_config, params

SWEEPS_DIR = "sweeps"  # where --sweep writes when no --out is given


def register(commands) -> None:
    cmd = commands.add_parser(
        "import-config", help="axolotl, LLaMA-Factory or the guide's lora_config.yaml into "
        "params.yaml (each key old -> new, or why not); --sweep: hp_search.yaml into a sweep file")
    cmd.add_argument("file", type=Path, help="the other tool's YAML config")
    cmd.add_argument("--out", type=Path, default=None,
                     help=f"params file to set the values in (default: {params.PARAMS_FILE}); "
                          f"with --sweep, the sweep file to write (default: "
                          f"{SWEEPS_DIR}/FILE_NAME.yaml)")
    cmd.add_argument("--sweep", action="store_true",
                     help="FILE is the guide's hp_search.yaml: write a sweep file for "
                          "`tunelab sweep`")
    cmd.add_argument("--dry-run", action="store_true", help="print the lines, write nothing")
    cmd.set_defaults(handler=run_import)


def run_import(args) -> int:
    source = import_config.read(args.file, sweep=args.sweep)
    if args.sweep:
        from tunelab.experiments import sweep_space

        out = args.out or Path(SWEEPS_DIR) / f"{args.file.stem}.yaml"
        plan, check = import_config.plan_sweep(source, out), sweep_space.load_sweep
    else:
        out = args.out or Path(params.PARAMS_FILE)
        plan = import_config.plan_params(source, out)
        check = partial(check_params_file, base=out.parent / DEFAULT_BASE)  # validate-config's
    print("\n".join(import_config.report(plan)))
    checked = import_config.write(plan, check, dry_run=args.dry_run)
    detail = ""
    if args.sweep:
        detail = f"{checked.strategy}, {checked.total_trials} trials" + (
            "" if args.dry_run else f"; `tunelab sweep {out} --dry-run` lists them")
    print(import_config.summary(plan, args.dry_run, detail))
    return 0
