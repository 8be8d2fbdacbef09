"""`tunelab merge`, `tunelab export`, `tunelab ensemble`: combine and ship trained adapters."""

from __future__ import annotations

import sys
from pathlib import Path

from tunelab.adapters import ensemble, export, merge
from tunelab.cli.arg_types import parse_list, parse_weights


def register(commands) -> None:
    merge_cmd = commands.add_parser("merge", help="weighted merge of LoRA adapters of one base "
                                    "(PEFT add_weighted_adapter) into a new adapter folder")
    merge_cmd.add_argument("--adapters", required=True, help="comma-separated adapter folders")
    merge_cmd.add_argument("--weights", default=None,
                           help="comma-separated, one per adapter (default: equal, summing to 1)")
    merge_cmd.add_argument("--method", default="linear", choices=merge.METHODS,
                           help="linear (same ranks, fast, approximate), cat (exact, rank = sum), "
                           "ties / dare_ties (same ranks, prune to --density), svd (the weighted sum "
                           "truncated to its top --svd-rank singular values: exact only when "
                           "--svd-rank >= the sum of the ranks)")
    merge_cmd.add_argument("--density", type=float, default=None,
                           help="ties/dare_ties: share of weights kept, (0, 1]; default 0.5")
    merge_cmd.add_argument("--svd-rank", type=int, default=None,
                           help="svd: rank of the result (default: the largest input rank)")
    merge_cmd.add_argument("--base", default=None,
                           help="base model folder (default: the adapters' own base)")
    merge_cmd.add_argument("--seed", type=int, default=0, help="dare_ties' random pruning")
    merge_cmd.add_argument("--output", required=True, type=Path)
    merge_cmd.set_defaults(handler=merge_adapters)

    export_cmd = commands.add_parser("export", help="merge an adapter into its base and save a "
                                     "plain transformers model folder (checked against the adapter)")
    export_cmd.add_argument("--adapter", required=True, type=Path, help="adapter folder")
    export_cmd.add_argument("--output", required=True, type=Path, help="folder to write")
    export_cmd.add_argument("--base", default=None,
                            help="base model folder (default: the adapter's own base)")
    export_cmd.add_argument("--check-prompts", type=int, default=4,
                            help="prompts whose logits are compared (default 4)")
    export_cmd.add_argument("--tolerance", type=float, default=export.DEFAULT_TOLERANCE,
                            help="largest allowed |logit difference| "
                            f"(default {export.DEFAULT_TOLERANCE:g})")
    export_cmd.add_argument("--prompts-file", default=export.DEFAULT_PROMPTS_FILE,
                            help="JSONL examples to check on (default data/prepared/test.jsonl; "
                            "built-in prompts when absent)")
    export_cmd.set_defaults(handler=export_adapter)

    ensemble_cmd = commands.add_parser("ensemble", help="answer a prompt with several models "
                                       "that share a tokenizer (logit_mean or weighted_vote)")
    ensemble_cmd.add_argument("--models", required=True,
                              help="comma-separated adapter or model folders")
    ensemble_cmd.add_argument("--weights", default=None,
                              help="comma-separated, one per model, >= 0 (default: equal)")
    ensemble_cmd.add_argument("--aggregation", default="logit_mean", choices=ensemble.AGGREGATIONS)
    ensemble_cmd.add_argument("--prompt", required=True)
    ensemble_cmd.add_argument("--system", default=None, help="optional system message")
    ensemble_cmd.add_argument("--max-new-tokens", type=int, default=128)
    ensemble_cmd.add_argument("--base", default=None, type=Path,
                              help="base model folder for adapters (default: each adapter's own)")
    ensemble_cmd.set_defaults(handler=ensemble_answer)


def merge_adapters(args) -> int:
    adapters = parse_list(args.adapters, "--adapters")
    weights = parse_weights(args.weights, len(adapters)) if args.weights \
        else [1.0 / len(adapters)] * len(adapters)
    summary = merge.merge(adapters, weights, args.method, args.output, density=args.density,
                          svd_rank=args.svd_rank, base=args.base, seed=args.seed)
    print(f"merged {len(adapters)} adapters ({args.method}, weights "
          f"{', '.join(f'{w:g}' for w in weights)}, rank {summary['rank']}) -> {args.output}")
    return 0


def export_adapter(args) -> int:
    summary = export.export_adapter(args.adapter, args.output, base=args.base,
                                    prompt_count=args.check_prompts, tolerance=args.tolerance,
                                    prompts_file=args.prompts_file)
    print(f"max |logit diff| exported vs adapter model: {summary['max_abs_logit_diff']:.3g} "
          f"on {summary['prompts']} prompts (tolerance {summary['tolerance']:g})")
    print(f"exported {summary['adapter']} merged into {summary['base']} -> {args.output}")
    return 0


def ensemble_answer(args) -> int:
    model_dirs = parse_list(args.models, "--models")
    weights = parse_weights(args.weights, len(model_dirs), "models") if args.weights \
        else [1.0] * len(model_dirs)
    result = ensemble.answer(model_dirs, weights, args.aggregation, args.prompt,
                             system=args.system, max_new_tokens=args.max_new_tokens,
                             base=args.base)
    for text, weight in result.get("votes", {}).items():
        shown = text if len(text) <= 70 else text[:67] + "..."
        print(f"vote {weight:.3f}: {shown}", file=sys.stderr)
    print(result["answer"])
    return 0
