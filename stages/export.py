"""Stage: the run's model as GGUF for llama.cpp and Ollama, checked against transformers.

Usage (dvc.yaml): python stages/export.py BASE_DIR ADAPTER_DIR ALIGNED_DIR TEST_FILE
                  EVAL_METRICS SAMPLES GGUF_DIR EXPORT_METRICS
The run's model is the aligned adapter where the align stage trained one (ALIGNED_DIR),
else the SFT result (ADAPTER_DIR); its answers and scores in SAMPLES and EVAL_METRICS are
what the GGUF files are held to.
Reads params `export`, `evaluate` (max_new_tokens, max_examples: the evaluation's
examples and budget; scorer: the GGUF answers are scored as evaluate scored them) and `prepare.system_prompt` (the Modelfile's SYSTEM); writes
GGUF_DIR (tuned-TYPE.gguf per export.quantizations, adapter-f32.gguf, Modelfile) and
EXPORT_METRICS (tunelab.deploy.parity). A prompt-template difference fails the stage
unless export.allow_template_drift; then nothing is written.
"""

import os
from pathlib import Path

from tunelab import pipeline
from tunelab.config import params
from tunelab.deploy import build, parity
from tunelab.errors import DataError, DeployError
from tunelab.eval import scorers
from tunelab.eval.inference import resolve_model
from tunelab.models import loading
from tunelab.util import files


def main(base_dir: str, adapter_dir: str, aligned_dir: str, test_file: str, eval_metrics: str,
         samples: str, gguf_dir: str, export_metrics: str) -> int:
    p = params.load("export")
    model_dir = loading.final_model(adapter_dir, aligned_dir)
    shipped = "aligned" if loading.aligned_objective(aligned_dir) else "tuned"  # eval.json's name
    resolve_model(model_dir, base_dir)  # a missing or wrong folder: one line, before any work
    evaluate = params.load("evaluate")
    system_prompt = params.load("prepare").system_prompt
    examples = files.read_jsonl(test_file)[:evaluate.max_examples or None]
    if not parity.chat_examples(examples):
        raise DataError(f"{test_file}: no chat examples to check the GGUF files on")
    reference = [row[shipped] for row in files.read_jsonl(samples)]
    threads = p.threads or os.cpu_count()

    model, tokenizer = loading.load_trained(base_dir, model_dir)
    if not tokenizer.chat_template:
        raise DeployError(f"{base_dir}: the tokenizer the model was trained with has no chat "
                          "template, so no GGUF chat template or Ollama TEMPLATE can be written")
    split = parity.held_out(tokenizer, examples, reference)
    speed = parity.transformers_speed(model, tokenizer, split.prompts[:p.speed_examples],
                                      evaluate.max_new_tokens)
    del model
    with files.atomic_path(gguf_dir) as staging, build.scratch_folder() as work:
        contenders = build.write(
            Path(base_dir), model_dir, staging, Path(gguf_dir), Path(work),
            p.quantizations, p.lora, tokenizer, system_prompt, evaluate.max_new_tokens,
            check_prompts=split.messages)
        result = parity.check(contenders, split, files.read_json(eval_metrics)[shipped], speed,
                              evaluate.max_new_tokens, p.speed_examples, threads,
                              scorers.load(evaluate.scorer))
        drift = parity.template_drift(result)
        if drift and not p.allow_template_drift:
            shown = ", ".join(f"{name}: {count}" for name, count in drift.items())
            raise DeployError(f"export: llama.cpp builds other prompt tokens than the trainer "
                              f"from the GGUF's chat template ({shown} of {result['examples']} "
                              f"examples); {gguf_dir} not written (export.allow_template_drift: "
                              "true to ship it anyway)")
    skipped = build.lora_skipped(model_dir) if p.lora else None
    if skipped:
        result["lora_skipped"] = skipped
    files.write_json_atomic(export_metrics, result)
    print(f"export: wrote {gguf_dir}/ and {export_metrics}; next: "
          f"ollama create NAME -f {gguf_dir}/{build.MODELFILE}")
    return 0


if __name__ == "__main__":
    pipeline.run(main, "export")
