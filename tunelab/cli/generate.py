"""`tunelab generate`: answer one prompt with a tuned model (and the base beside it)."""

from __future__ import annotations

from pathlib import Path

from tunelab.cli.arg_types import non_negative_float, positive_int, unit_float


def register(commands) -> None:
    gen = commands.add_parser("generate", help="answer a prompt with a tuned (and the base) model")
    gen.add_argument("--model", required=True, type=Path,
                     help="an adapter folder (e.g. models/adapter) or a full model folder")
    gen.add_argument("--base", default=None, help="base model folder for an adapter "
                     "(default: the adapter's own base_model_name_or_path)")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--system", default=None, help="optional system message")
    gen.add_argument("--compare-base", action="store_true", help="also answer with the base model")
    gen.add_argument("--max-new-tokens", type=positive_int, default=128)
    gen.add_argument("--temperature", type=non_negative_float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-p", type=unit_float, default=1.0, help="nucleus sampling, (0, 1]")
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(handler=generate)


def generate(args) -> int:
    from tunelab.eval import inference

    answers = inference.answer(args.model, args.prompt, base=args.base, system=args.system,
                               compare_base=args.compare_base,
                               max_new_tokens=args.max_new_tokens,
                               temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    if len(answers) == 1:
        print(answers["tuned"])
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=args.prompt[:80], show_lines=True)
    table.add_column("base")
    table.add_column(f"tuned ({args.model})")
    table.add_row(answers["base"], answers["tuned"])
    Console().print(table)
    return 0
