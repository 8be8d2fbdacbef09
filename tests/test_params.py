"""params.yaml: typed sections, one-line errors naming the key (tunelab.params)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.config import params
from tunelab.config.params import PrepareParams
from tunelab.errors import ParamsError

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def write_params(tmp_path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def params_error(path, section: str | None = None) -> str:
    """The message raised by load(section) (or load_all when no section)."""
    with pytest.raises(ParamsError) as caught:
        params.load(section, path) if section else params.load_all(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- the repo's params.yaml is the manual: it must match the code ------------

# Where the shipped sample departs from a default that suits any data: its generator writes
# a `template` field to split by, and its hand-written tickets are the held-out set.
SAMPLE_SETTINGS = {"prepare": {"group_by": "template", "seed": 35},
                   "evaluate": {"heldout": "data/heldout/tickets_handwritten.jsonl"}}


@pytest.mark.parametrize("section", list(params.SECTIONS))
def test_repo_params_section_equals_dataclass_defaults(section):
    expected = params.SECTIONS[section](**SAMPLE_SETTINGS.get(section, {}))
    assert params.load(section, REPO_PARAMS) == expected


def test_sample_settings_differ_from_the_defaults():
    for section, values in SAMPLE_SETTINGS.items():
        defaults = params.SECTIONS[section]()
        assert all(getattr(defaults, key) != value for key, value in values.items())


def test_repo_params_has_every_section_and_passes_split_check():
    sections = params.load_all(REPO_PARAMS)
    assert list(sections) == ["model", "prepare", "validate", "train", "align", "evaluate",
                              "judge", "export", "plot", "report", "check"]
    params.check_split(sections["prepare"], REPO_PARAMS)


def test_values_are_typed_from_yaml(tmp_path):
    path = write_params(tmp_path, "train:\n  learning_rate: 2.0e-4\n  epochs: 3\n  batch_size: 4\n"
                                  "  gradient_checkpointing: true\n  lora:\n    r: 8\n")
    train = params.load("train", path)
    assert train.learning_rate == 2e-4
    assert train.epochs == 3.0 and isinstance(train.epochs, float)
    assert train.batch_size == 4
    assert train.gradient_checkpointing is True
    assert train.lora == params.LoraParams(r=8)


def test_missing_or_empty_section_gives_defaults(tmp_path):
    path = write_params(tmp_path, "plot:\ntrain:\n  lora:\n")
    assert params.load("plot", path) == params.PlotParams()
    assert params.load("train", path) == params.TrainParams()
    assert params.load("report", path) == params.ReportParams()


# --- unknown keys and sections ------------------------------------------------

def test_unknown_key_suggests_the_close_one(tmp_path):
    path = write_params(tmp_path, "train:\n  lerning_rate: 1.0e-4\n")
    assert params_error(path, "train") == (
        f"{path}: train.lerning_rate: unknown key (did you mean 'learning_rate'?)")


def test_unknown_nested_key_names_the_full_path(tmp_path):
    path = write_params(tmp_path, "train:\n  lora:\n    rank: 8\n")
    assert params_error(path, "train") == f"{path}: train.lora.rank: unknown key"


def test_unknown_key_without_close_match_has_no_suggestion(tmp_path):
    path = write_params(tmp_path, "plot:\n  colour_scheme: dark\n")
    assert params_error(path, "plot") == f"{path}: plot.colour_scheme: unknown key"


def test_unknown_section_suggests_the_close_one(tmp_path):
    path = write_params(tmp_path, "trian:\n  batch_size: 8\n")
    assert params_error(path) == f"{path}: trian: unknown section (did you mean 'train'?)"


def test_unknown_section_without_close_match(tmp_path):
    path = write_params(tmp_path, "wandb:\n  project: x\n")
    assert params_error(path) == f"{path}: wandb: unknown section"


def test_section_that_is_not_a_mapping(tmp_path):
    path = write_params(tmp_path, "train: 5\n")
    assert params_error(path, "train") == f"{path}: train: expected a mapping, got int"


# --- types ----------------------------------------------------------------------

def test_word_for_an_int_is_rejected(tmp_path):
    path = write_params(tmp_path, 'train:\n  batch_size: "eight"\n')
    assert params_error(path, "train") == f"{path}: train.batch_size: expected int, got str 'eight'"


def test_bool_is_not_an_int(tmp_path):
    path = write_params(tmp_path, "train:\n  batch_size: true\n")
    assert params_error(path, "train") == f"{path}: train.batch_size: expected int, got bool True"


def test_float_for_an_int_is_rejected(tmp_path):
    path = write_params(tmp_path, "evaluate:\n  max_new_tokens: 64.5\n")
    assert params_error(path, "evaluate") == (
        f"{path}: evaluate.max_new_tokens: expected int, got float 64.5")


@pytest.mark.parametrize("written", ["1e-4", '"1e-4"', "1.0e-4", "0.0001"])
def test_learning_rate_in_exponent_notation_is_a_float(tmp_path, written):
    # YAML 1.1 reads 1e-4 (no dot) as the string "1e-4"; it must still mean 0.0001.
    path = write_params(tmp_path, f"train:\n  learning_rate: {written}\n")
    learning_rate = params.load("train", path).learning_rate
    assert learning_rate == 1e-4 and isinstance(learning_rate, float)


def test_non_numeric_string_for_a_float_is_rejected(tmp_path):
    path = write_params(tmp_path, "train:\n  learning_rate: fast\n")
    assert params_error(path, "train") == f"{path}: train.learning_rate: expected float, got str 'fast'"


# --- ranges and choices ----------------------------------------------------------

@pytest.mark.parametrize("written, shown", [("-1.0e-4", "-0.0001"), ("0", "0.0")])
def test_learning_rate_must_be_positive(tmp_path, written, shown):
    path = write_params(tmp_path, f"train:\n  learning_rate: {written}\n")
    assert params_error(path, "train") == f"{path}: train.learning_rate: must be > 0, got {shown}"


def test_learning_rate_nan_is_rejected(tmp_path):
    path = write_params(tmp_path, "train:\n  learning_rate: .nan\n")
    assert params_error(path, "train") == f"{path}: train.learning_rate: must be a finite number, got nan"


@pytest.mark.parametrize("steps", [0, -5])
def test_max_steps_must_be_minus_one_or_positive(tmp_path, steps):
    path = write_params(tmp_path, f"train:\n  max_steps: {steps}\n")
    assert params_error(path, "train") == (f"{path}: train.max_steps: must be -1 (train for "
                                           f"`epochs`) or > 0, got {steps}")


def test_lora_rank_zero_is_rejected(tmp_path):
    path = write_params(tmp_path, "train:\n  lora:\n    r: 0\n")
    assert params_error(path, "train") == f"{path}: train.lora.r: must be > 0, got 0"


def test_negative_weight_decay_is_rejected(tmp_path):
    path = write_params(tmp_path, "train:\n  weight_decay: -0.1\n")
    assert params_error(path, "train") == f"{path}: train.weight_decay: must be >= 0, got -0.1"


@pytest.mark.parametrize("written, shown", [("1", "1.0"), ("-0.1", "-0.1")])
def test_ratio_outside_unit_interval_is_rejected(tmp_path, written, shown):
    path = write_params(tmp_path, f"prepare:\n  val_ratio: {written}\n")
    assert params_error(path, "prepare") == f"{path}: prepare.val_ratio: must be in [0, 1), got {shown}"


def test_precision_must_be_a_listed_choice(tmp_path):
    path = write_params(tmp_path, "train:\n  precision: fp8\n")
    assert params_error(path, "train") == (
        f"{path}: train.precision: must be one of auto, bf16, fp16, fp32, got 'fp8'")


@pytest.mark.parametrize("val_ratio, test_ratio, shown", [(0.5, 0.5, "1"), (0.6, 0.5, "1.1")])
def test_split_ratios_summing_to_one_or_more_are_rejected(val_ratio, test_ratio, shown):
    prepare = PrepareParams(val_ratio=val_ratio, test_ratio=test_ratio)
    with pytest.raises(ParamsError) as caught:
        params.check_split(prepare, "p.yaml")
    assert str(caught.value) == ("p.yaml: prepare.val_ratio + prepare.test_ratio must be < 1 "
                                 f"(the rest is the train split), got {shown}")


def test_split_ratios_below_one_pass():
    params.check_split(PrepareParams(val_ratio=0.45, test_ratio=0.5))


# --- lora.target_modules: a string or a list of strings ---------------------------

@pytest.mark.parametrize("written, expected", [
    ("all-linear", "all-linear"),
    ("[q_proj, v_proj]", ["q_proj", "v_proj"]),
    ("\n      - q_proj\n      - o_proj", ["q_proj", "o_proj"]),
])
def test_target_modules_accepts_string_or_list(tmp_path, written, expected):
    path = write_params(tmp_path, f"train:\n  lora:\n    target_modules: {written}\n")
    assert params.load("train", path).lora.target_modules == expected


@pytest.mark.parametrize("written, shown", [("[1, 2]", "[1, 2]"), ("[]", "[]"), ("7", "7")])
def test_target_modules_rejects_non_strings_and_empty_list(tmp_path, written, shown):
    path = write_params(tmp_path, f"train:\n  lora:\n    target_modules: {written}\n")
    assert params_error(path, "train") == (f"{path}: train.lora.target_modules: expected a string "
                                           f"or a non-empty list of strings, got {shown}")


# --- the file itself ---------------------------------------------------------------

def test_invalid_yaml_reports_the_line(tmp_path):
    path = write_params(tmp_path, "train:\n  batch_size: 8\n   learning_rate: 1\n")
    assert params_error(path, "train") == f"{path}:3: invalid YAML: mapping values are not allowed here"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    assert params_error(path) == f"{path}: file not found"


def test_top_level_must_be_a_mapping(tmp_path):
    path = write_params(tmp_path, "- train\n- plot\n")
    assert params_error(path) == f"{path}: expected a mapping of sections at the top level"


@pytest.mark.parametrize("text, reason", [
    ("export:\n  quantizations: [q8_0, q4_km]\n",
     "export.quantizations.1: must be one of f32, f16, bf16, q8_0, q6_k, q5_k_m, q5_k_s, q5_1, "
     "q5_0, q4_k_m, q4_k_s, q4_1, q4_0, q3_k_l, q3_k_m, q3_k_s, q2_k, got 'q4_km'"),
    ("export:\n  quantizations: [q8_0, q8_0]\n",
     "export.quantizations: a list of one or more types, each once, got ['q8_0', 'q8_0']"),
    ("export:\n  quantizations: []\n",
     "export.quantizations: a list of one or more types, each once, got []"),
    ("export:\n  speed_examples: 0\n", "export.speed_examples: must be > 0, got 0"),
])
def test_export_params_name_the_key(tmp_path, text, reason):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as raised:
        params.load("export", path)
    assert str(raised.value) == f"{path}: {reason}"

