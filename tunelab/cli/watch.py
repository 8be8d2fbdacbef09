"""`tunelab watch`: continuous learning from a folder of incoming data files."""

from __future__ import annotations

import sys
from pathlib import Path

from tunelab.experiments import registry, watch


def register(commands) -> None:
    cmd = commands.add_parser("watch", help="ingest new data files, run the pipeline as an "
                              "experiment, promote it if it beats the current model on the "
                              "same test examples")
    cmd.add_argument("--incoming", required=True, type=Path, help="folder to watch for data files")
    cmd.add_argument("--interval", type=float, default=60.0, help="seconds between looks")
    cmd.add_argument("--min-gain", type=float, default=0.0,
                     help="promote when the lower bound of the 95%% interval of the gain over "
                          "the current model, on the same examples, is at least this "
                          "(negative: accept a small loss for the new data)")
    cmd.add_argument("--metric", default=watch.DEFAULT_METRIC,
                     help="a per-example score: tuned.task_accuracy (default), "
                          "tuned.exact_match, tuned.json_valid or tuned.field_NAME")
    cmd.add_argument("--once", action="store_true", help="process what is there, then exit")
    cmd.add_argument("--settle", type=float, default=2.0,
                     help="a file is taken only when its size and mtime stay the same this long")
    cmd.add_argument("--log", type=Path, default=watch.DEFAULT_LOG)
    cmd.add_argument("--stage", default="staging", choices=[*registry.STAGES, "none"],
                     help="registry stage a promoted version is assigned to (default staging; "
                          "none: register the version only)")
    cmd.set_defaults(handler=watch_folder)


def watch_folder(args) -> int:
    try:
        return watch.watch(args.incoming, metric=args.metric, min_gain=args.min_gain,
                           interval=args.interval, settle=args.settle, once=args.once,
                           log=args.log,
                           registry_stage=None if args.stage == "none" else args.stage)
    except watch.WatchError as err:  # not among USER_ERRORS, so app would not catch it
        print(f"tunelab watch: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tunelab watch: stopped", file=sys.stderr)
        return 130
