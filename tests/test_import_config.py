"""`tunelab import-config`: an axolotl, LLaMA-Factory or guide config into params.yaml with its
comments kept, and the guide's hp_search.yaml into a sweep file. Pinned: the values written,
the lines printed (old -> new, or why not), the exit codes, that `tunelab validate-config`
and `tunelab sweep --dry-run` accept what was written, and that bad input writes nothing.

The fixtures (tests/fixtures/) are an axolotl QLoRA config, a LLaMA-Factory LoRA DPO config
and the guide's own lora_config.yaml and hp_search.yaml, copied from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunelab.cli import app as cli
from tunelab.config import params_edit
from tunelab.util.names import flatten

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
TUNELAB = Path(sys.executable).parent / "tunelab"   # the installed console script


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working folder holding a copy of the repo's params.yaml (and nothing else)."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def changes(path: Path) -> dict:
    """{params key: new value} for every key ``path`` sets differently from the repo's."""
    before = flatten(yaml.safe_load((REPO / "params.yaml").read_text()))
    after = flatten(yaml.safe_load(path.read_text()))
    assert set(before) == set(after)
    return {key: after[key] for key in after if after[key] != before[key]}


def validate_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([TUNELAB, "validate-config", path.name], cwd=path.parent,
                          capture_output=True, text=True)


def assert_nothing_written(folder: Path) -> None:
    assert (folder / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


# --- the guide's lora_config.yaml -----------------------------------------------------

GUIDE_OUTPUT = """\
lora_config.yaml: the guide's lora_config.yaml layout (keys model_name, base_model_path, lora_config, training)
mapped into params.yaml:
  lora_config.r: 16 → train.lora.r: 16 (unchanged)
  lora_config.lora_alpha: 32 → train.lora.alpha: 32 (unchanged)
  lora_config.target_modules: [q_proj, v_proj, k_proj, o_proj] → train.lora.target_modules: [q_proj, v_proj, k_proj, o_proj] (was all-linear)
  lora_config.lora_dropout: 0.1 → train.lora.dropout: 0.1 (was 0)
  training.num_epochs: 3 → train.epochs: 3 (was 1)
  training.num_epochs: 3 → train.max_steps: -1 (was 90); no step limit in the config: the run trains for epochs
  training.batch_size: 4 → train.batch_size: 4 (unchanged)
  training.gradient_accumulation: 4 → train.gradient_accumulation: 4 (was 1)
  training.learning_rate: 2e-4 → train.learning_rate: 0.0002 (was 0.001)
  training.max_length: 512 → train.max_length: 512 (was 256)
  optimization.gradient_checkpointing: true → train.gradient_checkpointing: true (was false)
  optimization.fp16: true → train.precision: fp16 (was auto)
  validation.eval_steps: 50 → train.eval_steps: 50 (was 30)
  validation.save_steps: 100 → train.save_steps: 100 (was 10)
  validation.validation_split: 0.1 → prepare.val_ratio: 0.1 (unchanged)
not mapped:
  model_name: a name for the guide's model list; base_model_path gives the weights (model.base)
  base_model_path: '~/.cache/llm-lab/models/mistral-7b.gguf' is neither a model folder or .gguf file here nor a hub id (org/name): put the weights in a local folder and set model.base to it
  lora_config.bias: tunelab trains no bias terms, which none asks: nothing to set
  training.warmup_steps: tunelab sets warmup as a share of the run (train.warmup_ratio) and the run's length in steps is not known here (no training.max_steps); set it to 100 / your total steps
  optimization.dataloader_num_workers: the prepare stage tokenizes once, before training: no loader workers to set
  validation.eval_strategy: tunelab evaluates every train.eval_steps steps: nothing more to set
wrote params.yaml: 11 values changed, 4 already so; 6 keys not mapped
"""


def test_guide_lora_config_sets_params_and_says_why_for_the_rest(workdir, capsys):
    shutil.copy(FIXTURES / "lora_config.yaml", workdir)
    code, out, err = run_cli(capsys, "import-config", "lora_config.yaml")
    assert (code, err) == (0, "")
    assert out == GUIDE_OUTPUT
    assert changes(workdir / "params.yaml") == {
        "train.lora.target_modules": ["q_proj", "v_proj", "k_proj", "o_proj"],
        "train.lora.dropout": 0.1, "train.epochs": 3, "train.max_steps": -1,
        "train.gradient_accumulation": 4, "train.learning_rate": 2e-4, "train.max_length": 512,
        "train.gradient_checkpointing": True, "train.precision": "fp16", "train.eval_steps": 50,
        "train.save_steps": 100}
    checked = validate_config(workdir / "params.yaml")
    assert (checked.returncode, checked.stderr) == (0, ""), checked.stderr


def test_params_yaml_keeps_every_comment_and_untouched_line(workdir, capsys):
    shutil.copy(FIXTURES / "lora_config.yaml", workdir)
    assert run_cli(capsys, "import-config", "lora_config.yaml")[0] == 0
    before = (REPO / "params.yaml").read_text().splitlines()
    after = (workdir / "params.yaml").read_text().splitlines()
    assert len(after) == len(before)
    edited = [(old, new) for old, new in zip(before, after) if old != new]
    assert len(edited) == 11  # one line per changed value, nothing else
    for old, new in edited:  # the value changed, its comment did not
        assert new.partition(" #")[2].strip() == old.partition(" #")[2].strip() != ""
    assert "  learning_rate: 2.0e-4   # peak LR for lora/qlora" in after[
        before.index(next(line for line in before if line.startswith("  learning_rate: 1.0e-3")))]
    assert "    target_modules: [q_proj, v_proj, k_proj, o_proj] # all-linear | list" in \
        "\n".join(after)


def test_an_untouched_params_yaml_is_written_back_byte_for_byte():
    text = (REPO / "params.yaml").read_text()
    assert params_edit.text(params_edit.load(REPO / "params.yaml")) == text


# --- axolotl --------------------------------------------------------------------------

def test_axolotl_qlora_config(workdir, capsys):
    (workdir / "data/tickets").mkdir(parents=True)  # the dataset path, here as a local folder
    code, out, err = run_cli(capsys, "import-config", FIXTURES / "axolotl_qlora.yml")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (f"{FIXTURES / 'axolotl_qlora.yml'}: axolotl config (keys base_model, "
                        "load_in_8bit, load_in_4bit, datasets)")
    assert lines[1:4] == [
        "mapped into params.yaml:",
        "  base_model: NousResearch/Meta-Llama-3.1-8B → model.base: "
        "NousResearch/Meta-Llama-3.1-8B (was smollm2-135m-instruct); a hub id: the base stage "
        "downloads it where a hub is reachable; offline, put the weights in a local folder and "
        "set model.base to it",
        "  load_in_4bit: true → train.quantization.bits: 4 (unchanged)"]
    for line in [
            "  adapter: qlora → train.method: qlora (was lora)",
            "  datasets[0].path: data/tickets → prepare.raw_dir: data/tickets (was data/raw)",
            "  datasets[0].type: chat_template → prepare.format: chat (was auto)",
            "  learning_rate: 2e-4 → train.learning_rate: 0.0002 (was 0.001)",
            "  num_epochs: 4 → train.max_steps: -1 (was 90); no step limit in the config: the "
            "run trains for epochs",
            "  bf16: auto → train.precision: auto (unchanged)",
            "  deepspeed: multi-GPU launcher config; tunelab runs on several GPUs or nodes "
            "through `make train-multi ACCELERATE_CONFIG=configs/accelerate/...` "
            "(docs/multi-node.md), not through params.yaml",
            "  wandb_project: tunelab logs every run with DVCLive (metrics/train, `dvc plots`), "
            "no W&B",
            "  optimizer: tunelab trains with AdamW (torch) only; no counterpart for "
            "paged_adamw_32bit",
            "  warmup_steps: tunelab sets warmup as a share of the run (train.warmup_ratio) and "
            "the run's length in steps is not known here (no max_steps); set it to 10 / your "
            "total steps",
            "  datasets[0]: field_messages: tunelab's readers find the fields themselves; "
            "prepare.columns / prepare.roles rename others",
            "left empty (null) in axolotl_qlora.yml, nothing to import: lora_model_dir, "
            "wandb_entity"]:
        assert line in lines, line
    assert lines.index("not mapped:") == 25
    assert lines[-1] == "wrote params.yaml: 18 values changed, 5 already so; 16 keys not mapped"
    assert changes(workdir / "params.yaml") == {
        "model.base": "NousResearch/Meta-Llama-3.1-8B", "model.chat_template": "llama3",
        "prepare.raw_dir": "data/tickets", "prepare.format": "chat", "prepare.val_ratio": 0.05,
        "train.method": "qlora", "train.max_length": 2048, "train.packing": True,
        "train.lora.r": 32, "train.lora.alpha": 64, "train.lora.dropout": 0.05,
        "train.gradient_accumulation": 4, "train.batch_size": 2, "train.epochs": 4,
        "train.max_steps": -1, "train.learning_rate": 2e-4, "train.gradient_checkpointing": True,
        "train.logging_steps": 1}
    assert validate_config(workdir / "params.yaml").returncode == 0


def test_axolotl_rl_keys_go_to_the_align_step(workdir, capsys):
    (workdir / "dpo.yml").write_text(
        "base_model: ./base\nadapter: lora\nrl: ipo\nrl_beta: 0.2\nlearning_rate: 5e-7\n"
        "micro_batch_size: 4\nmax_steps: 200\nwarmup_steps: 20\nlr_scheduler: cosine\n")
    (workdir / "base").mkdir()
    code, out, _ = run_cli(capsys, "import-config", "dpo.yml")
    assert code == 0
    assert out.splitlines()[2:-1] == [
        "  base_model: ./base → model.base: ./base (was smollm2-135m-instruct)",
        "  adapter: lora → train.method: lora (unchanged)",
        "  rl: ipo → align.objective: dpo (was none)",
        "  rl: ipo → align.loss_type: ipo (was sigmoid); DPO with the IPO loss",
        "  rl_beta: 0.2 → align.beta: 0.2 (was null)",
        "  learning_rate: 5e-7 → align.learning_rate: 5e-07 (was 0.0001)",
        "  micro_batch_size: 4 → align.batch_size: 4 (was 2)",
        "  max_steps: 200 → align.max_steps: 200 (was 30)",
        "not mapped:",
        "  warmup_steps: it sets this config's preference run, and tunelab's align step has no "
        "warmup_ratio (train.warmup_ratio is the SFT run's)",
        "  lr_scheduler: it sets this config's preference run, and tunelab's align step has no "
        "lr_scheduler (train.lr_scheduler is the SFT run's)"]
    assert changes(workdir / "params.yaml") == {
        "model.base": "./base", "align.objective": "dpo", "align.loss_type": "ipo",
        "align.beta": 0.2, "align.learning_rate": 5e-7, "align.batch_size": 4,
        "align.max_steps": 200}


def test_axolotl_without_an_adapter_is_a_full_fine_tune(workdir, capsys):
    (workdir / "full.yml").write_text("base_model: org/model\nlearning_rate: 1e-5\n"
                                      "sequence_len: 512\nbf16: false\nfp16: false\n")
    code, out, _ = run_cli(capsys, "import-config", "full.yml", "--dry-run")
    assert code == 0
    lines = out.splitlines()
    assert lines[2] == ("  adapter: (not set) → train.method: full (was lora); no adapter: "
                        "axolotl trains every weight")
    assert "  learning_rate: 1e-5 → train.full_learning_rate: 1e-05 (was 2e-05)" in lines
    assert "  bf16: false → train.precision: fp32 (was auto); bf16 and fp16 off: full " \
           "precision" in lines
    assert lines[-2:] == ["  fp16: bf16: false already decides (fp32)",
                          "dry run, params.yaml not written: 5 values would change, 0 already "
                          "so; 1 key not mapped"]
    assert_nothing_written(workdir)
    (workdir / "dpo.yml").write_text("base_model: org/model\nrl: dpo\nlearning_rate: 5e-7\n")
    code, out, _ = run_cli(capsys, "import-config", "dpo.yml", "--dry-run")
    assert code == 0
    assert "  adapter: a full-weight preference run: tunelab's align step trains the SFT " \
           "adapter (train.method lora or qlora)" in out.splitlines()
    assert "→ train.method" not in out


# --- LLaMA-Factory --------------------------------------------------------------------

def test_llamafactory_lora_dpo_config(workdir, capsys):
    code, out, err = run_cli(capsys, "import-config", FIXTURES / "llamafactory_dpo.yaml")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].endswith("llamafactory_dpo.yaml: LLaMA-Factory config (keys "
                             "model_name_or_path, stage, do_train, finetuning_type)")
    for line in [
            "  stage: dpo → align.objective: dpo (was none)",
            "  lora_rank: 8 → train.lora.r: 8 (was 16)",
            "  lora_rank: 8 → train.lora.alpha: 16 (was 32); no lora_alpha: LLaMA-Factory's "
            "default is 2 x lora_rank",
            "  lora_target: all → train.lora.target_modules: all-linear (unchanged)",
            "  pref_beta: 0.1 → align.beta: 0.1 (was null)",
            "  cutoff_len: 2048 → align.max_length: 2048 (was 512)",
            "  num_train_epochs: 3 → align.max_steps: -1 (was 30); no step limit in the "
            "config: the run trains for epochs",
            "  bf16: true → align.precision: bf16 (was auto)",
            "  dataset: dataset names of LLaMA-Factory's data/dataset_info.json; tunelab reads "
            "every data file in prepare.raw_dir (data/raw): copy your files there (no dataset "
            "hub here)",
            "  warmup_ratio: it sets this config's preference run, and tunelab's align step has "
            "no warmup_ratio (train.warmup_ratio is the SFT run's)",
            "  report_to: tunelab logs every run with DVCLive (metrics/train, `dvc plots`) "
            "anyway",
            "left empty (null) in llamafactory_dpo.yaml, nothing to import: "
            "resume_from_checkpoint"]:
        assert line in lines, line
    assert lines[-1] == "wrote params.yaml: 16 values changed, 3 already so; 13 keys not mapped"
    assert changes(workdir / "params.yaml") == {
        "model.base": "meta-llama/Meta-Llama-3-8B-Instruct", "model.chat_template": "llama3",
        "prepare.val_ratio": 0.05, "train.lora.r": 8, "train.lora.alpha": 16,
        "align.objective": "dpo", "align.beta": 0.1, "align.learning_rate": 5e-6,
        "align.max_steps": -1, "align.epochs": 3.0, "align.batch_size": 1,
        "align.gradient_accumulation": 8, "align.max_length": 2048, "align.precision": "bf16",
        "align.logging_steps": 10, "align.save_steps": 500}
    assert validate_config(workdir / "params.yaml").returncode == 0


def test_unsupported_choices_and_values_out_of_range_are_lines_not_values(workdir, capsys):
    (workdir / "lf.yaml").write_text(
        "model_name_or_path: ./nowhere\nfinetuning_type: freeze\nlora_dropout: 1.5\n"
        "optim: adafactor\nlr_scheduler_type: polynomial\ntemplate: qwen\nstage: sft\n")
    code, out, _ = run_cli(capsys, "import-config", "lf.yaml")
    assert code == 0
    assert out.splitlines()[1:] == [
        "mapped into params.yaml:",
        "  stage: sft → align.objective: none (unchanged); supervised fine-tuning only",
        "not mapped:",
        "  model_name_or_path: './nowhere' is neither a model folder or .gguf file here nor a "
        "hub id (org/name): put the weights in a local folder and set model.base to it",
        "  finetuning_type: tunelab trains a LoRA adapter (lora, qlora) or every weight (full); "
        "no counterpart for freeze",
        "  lora_dropout: train.lora.dropout: must be in [0, 1), got 1.5",
        "  optim: tunelab trains with AdamW (torch) only; no counterpart for adafactor",
        "  lr_scheduler_type: train.lr_scheduler: must be one of cosine, linear, constant, "
        "constant_with_warmup, got 'polynomial'",
        "  template: LLaMA-Factory's qwen template is ChatML plus Qwen's default system prompt: "
        "auto keeps the model's own, or set model.chat_template: chatml and "
        "prepare.system_prompt",
        "wrote params.yaml: 0 values changed, 1 already so; 6 keys not mapped"]
    assert changes(workdir / "params.yaml") == {}


# --- what fails: one line, nothing written --------------------------------------------

def test_a_result_that_fails_validate_config_is_one_line_and_writes_nothing(workdir, capsys):
    (workdir / "ax.yml").write_text("base_model: org/model\nadapter: lora\nlogging_steps: 3\n"
                                    "save_steps: 10\n")
    code, out, err = run_cli(capsys, "import-config", "ax.yml")
    assert code == 1
    assert "  logging_steps: 3 → train.logging_steps: 3 (was 5)" in out.splitlines()
    assert err == ("tunelab import-config: error: params.yaml: train.save_steps: must be a "
                   "multiple of train.logging_steps (3) so a resumed run logs the same curve, "
                   "got 10 (with the imported values; params.yaml is unchanged)\n")
    assert_nothing_written(workdir)


@pytest.mark.parametrize("text, message", [
    ("base_model: [unclosed\n  lora_r: 8\n",
     "bad.yaml:2: invalid YAML: expected ',' or ']', but got ':'"),
    ("foo: 1\nbar: 2\n", "bad.yaml: not a config tunelab can import: it has too few keys of an "
     "axolotl config (base_model, sequence_len, ...), a LLaMA-Factory config "
     "(model_name_or_path, finetuning_type, ...) or the guide's lora_config.yaml or "
     "hp_search.yaml (lora_config, search_space, ...)"),
    ("- base_model: x\n", "bad.yaml: expected a mapping of sections at the top level"),
    ("train:\n  method: lora\n", "bad.yaml: already a tunelab params file; check it with "
     "`tunelab validate-config bad.yaml`"),
], ids=["not YAML", "unknown format", "not a mapping", "tunelab's own"])
def test_bad_input_is_one_line_exit_1_and_writes_nothing(workdir, text, message):
    (workdir / "bad.yaml").write_text(text)
    done = subprocess.run([TUNELAB, "import-config", "bad.yaml"], cwd=workdir,
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"tunelab import-config: error: {message}\n"
    assert_nothing_written(workdir)


def test_no_params_file_to_set_values_in(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copy(FIXTURES / "lora_config.yaml", tmp_path)
    code, out, err = run_cli(capsys, "import-config", "lora_config.yaml")
    assert (code, out) == (1, "")
    assert err == ("tunelab import-config: error: params.yaml: file not found (import-config "
                   "sets values in a tunelab params.yaml, keeping its comments: run it in the "
                   "repository, or give --out)\n")


def test_validate_config_points_another_tools_config_at_import_config(workdir, capsys):
    shutil.copy(FIXTURES / "lora_config.yaml", workdir)
    code, _, err = run_cli(capsys, "validate-config", "lora_config.yaml")
    assert (code, err) == (1, "tunelab validate-config: error: lora_config.yaml: model_name: "
                              "unknown section; is this another tool's config? try "
                              "`tunelab import-config lora_config.yaml`\n")


# --- the guide's hp_search.yaml -> a sweep file ---------------------------------------

SWEEP_FILE = """\
# Imported from hp_search.yaml by `tunelab import-config --sweep`.
# List the trials: tunelab sweep sweeps/hp_search.yaml --dry-run    Run them: tunelab sweep sweeps/hp_search.yaml
strategy: grid
metric: train.eval_loss
direction: minimize
search_space:
  train.learning_rate: [1.0e-5, 2.0e-5, 5.0e-5, 1.0e-4, 2.0e-4]
  train.lora.r: [4, 8, 16, 32]
  train.lora.alpha: [16, 32, 64]
  train.batch_size: [2, 4, 8]
"""


def test_hp_search_becomes_a_sweep_file_that_tunelab_sweep_accepts(workdir, capsys):
    shutil.copy(FIXTURES / "hp_search.yaml", workdir)
    code, out, err = run_cli(capsys, "import-config", "--sweep", "hp_search.yaml")
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == [
        "mapped into sweeps/hp_search.yaml:",
        "  search_space.learning_rate: [1e-5, 2e-5, 5e-5, 1e-4, 2e-4] → "
        "search_space.train.learning_rate: [1e-05, 2e-05, 5e-05, 0.0001, 0.0002]",
        "  search_space.lora_r: [4, 8, 16, 32] → search_space.train.lora.r: [4, 8, 16, 32]",
        "  search_space.lora_alpha: [16, 32, 64] → search_space.train.lora.alpha: [16, 32, 64]",
        "  search_space.batch_size: [2, 4, 8] → search_space.train.batch_size: [2, 4, 8]",
        "  search_strategy: grid → strategy: grid",
        "  metric: validation_loss → metric: train.eval_loss",
        "  metric: validation_loss → direction: minimize; a loss: lower is better",
        "not mapped:",
        "  max_trials: the grid has 180 points and a tunelab grid runs them all (max_trials "
        "only caps it); to run 20, set search_strategy: random or bayesian",
        "wrote sweeps/hp_search.yaml (grid, 180 trials; `tunelab sweep sweeps/hp_search.yaml "
        "--dry-run` lists them); 1 key not mapped"]
    assert (workdir / "sweeps/hp_search.yaml").read_text() == SWEEP_FILE
    listed = subprocess.run([TUNELAB, "sweep", "sweeps/hp_search.yaml", "--dry-run"],
                            cwd=workdir, capture_output=True, text=True)
    assert (listed.returncode, listed.stderr) == (0, "")
    assert listed.stdout.splitlines()[:2] == [
        "sweeps/hp_search.yaml: grid, 180 trials, minimize train.eval_loss",
        "  01 learning_rate=1e-05 r=4 alpha=16 batch_size=2"]


def test_a_random_search_keeps_max_trials_and_drops_what_has_no_key(workdir, capsys):
    (workdir / "search.yaml").write_text(
        "search_space:\n  learning_rate: [1e-4, 3e-4]\n  warmup_steps: [0, 100]\n"
        "  lora_dropout: [0.0, 1.0]\nsearch_strategy: random\nmax_trials: 3\n"
        "metric: validation_loss\n")
    code, out, _ = run_cli(capsys, "import-config", "--sweep", "search.yaml", "--out",
                           "sweeps/lr.yaml")
    assert code == 0
    assert out.splitlines()[-4:] == [
        "not mapped:",
        "  search_space.warmup_steps: no params key for this knob in tunelab's sweeps; tunelab "
        "sets warmup as a share of the run: search warmup_ratio instead",
        "  search_space.lora_dropout: train.lora.dropout: must be in [0, 1), got 1.0",
        "wrote sweeps/lr.yaml (random, 3 trials; `tunelab sweep sweeps/lr.yaml --dry-run` "
        "lists them); 2 keys not mapped"]
    assert yaml.safe_load((workdir / "sweeps/lr.yaml").read_text()) == {
        "strategy": "random", "metric": "train.eval_loss", "direction": "minimize",
        "max_trials": 3, "search_space": {"train.learning_rate": [1e-4, 3e-4]}}


def test_a_search_and_a_training_config_each_need_their_own_mode(workdir, capsys):
    shutil.copy(FIXTURES / "hp_search.yaml", workdir)
    shutil.copy(FIXTURES / "lora_config.yaml", workdir)
    code, _, err = run_cli(capsys, "import-config", "hp_search.yaml")
    assert (code, err) == (1, "tunelab import-config: error: hp_search.yaml: the guide's "
                              "hp_search.yaml layout, a hyperparameter search; import it as a "
                              "sweep file with `tunelab import-config --sweep hp_search.yaml`\n")
    code, _, err = run_cli(capsys, "import-config", "--sweep", "lora_config.yaml")
    assert (code, err) == (1, "tunelab import-config: error: lora_config.yaml: the guide's "
                              "lora_config.yaml layout, not a hyperparameter search (the "
                              "guide's hp_search.yaml layout); import it without --sweep\n")
    assert not (workdir / "sweeps").exists()
    assert_nothing_written(workdir)
