"""A corpus of malformed data files and params run through the real entry points
(`tunelab validate-data`, `tunelab validate-config`, the prepare and train stages).
Each must give a one-line error naming file:line or the params key and the reason,
exit non-zero, write nothing, and leave data/raw/ byte for byte as it was."""

import hashlib
import io as stdio
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunelab.cli import app as cli
from conftest import stage_args

REPO = Path(__file__).resolve().parents[1]
TEN_MB = 10 * 1024 * 1024
GOOD = b'{"instruction": "Say hi", "output": "hi"}\n'


def parquet(columns: dict) -> bytes:
    import pyarrow
    import pyarrow.parquet

    buffer = stdio.BytesIO()
    pyarrow.parquet.write_table(pyarrow.table(columns), buffer)
    return buffer.getvalue()


# (case name, file name, content, expected "line: reason" after the path)
DATA_CASES = [
    ("broken JSON", "a.jsonl", GOOD + b'{"instruction": "x", "output": "y"\n',
     ":2: invalid JSON: Expecting ',' delimiter"),
    ("line not an object", "a.jsonl", b"[1, 2]\n", ":1: not a JSON object (got list)"),
    ("wrong type", "a.jsonl", b'{"instruction": 5, "output": "y"}\n',
     ":1: field 'instruction' must be a str, got int"),
    ("null answer", "a.jsonl", b'{"instruction": "x", "output": null}\n',
     ":1: field 'output' must be a str, got null"),
    ("missing field", "a.jsonl", GOOD + GOOD + b'{"instruction": "x"}\n',
     ":3: missing field 'output'"),
    ("empty field", "a.jsonl", b'{"instruction": "x", "output": "   "}\n', ":1: empty field 'output'"),
    ("unknown role", "a.jsonl", b'{"messages": [{"role": "robot", "content": "x"}]}\n',
     ":1: unknown role 'robot' in message 1 (use system, user, assistant)"),
    ("messages not a list", "a.jsonl", b'{"messages": "hello"}\n',
     ":1: field 'messages' must be a list, got str"),
    ("messages empty", "a.jsonl", b'{"messages": []}\n', ":1: empty field 'messages'"),
    ("message not an object", "a.jsonl", b'{"messages": ["hi"]}\n',
     ":1: message 1 must be an object, got str"),
    ("no final answer", "a.jsonl", b'{"messages": [{"role": "user", "content": "hi"}]}\n',
     ":1: conversation must end with an assistant message"),
    ("no user turn", "a.jsonl",
     b'{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}\n',
     ":1: conversation has no user message"),
    ("sharegpt unknown speaker", "a.jsonl",
     b'{"conversations": [{"from": "alien", "value": "x"}]}\n', ":1: unknown role 'alien'"),
    ("unknown format", "a.jsonl", b'{"question": "x", "answer": "y"}\n',
     ":1: cannot tell the format"),
    ("empty file", "a.jsonl", b"", ": empty file"),
    ("whitespace only", "a.jsonl", b"\n  \n\t\n", ": empty file"),
    ("non-UTF-8 byte", "a.jsonl", GOOD + b'{"instruction": "caf\xe9", "output": "y"}\n',
     ":2: not valid UTF-8"),
    ("10 MB line of garbage", "a.jsonl", b"x" * TEN_MB + b"\n", ":1: invalid JSON: Expecting value"),
    ("10 MB line, missing field", "a.jsonl",
     b'{"instruction": "' + b"w" * TEN_MB + b'"}\n', ":1: missing field 'output'"),
    ("10 MB role name", "a.jsonl",
     b'{"messages": [{"role": "' + b"r" * TEN_MB + b'", "content": "x"}]}\n',
     ":1: unknown role 'rrrrrrrrrrrrrrrrrrrr"),
    ("nesting too deep", "a.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n",
     ":1: invalid JSON: nested too deeply"),
    ("5000-digit number", "a.jsonl", b'{"instruction": "x", "output": ' + b"9" * 5000 + b"}\n",
     ":1: invalid JSON: number too large"),
    ("JSON not an array", "a.json", b'{"instruction": "x", "output": "y"}', ":1: expected a JSON "
     "array of objects, got dict"),
    ("JSON array broken", "a.json", b'[\n{"text": "a"},\n', ":3: invalid JSON"),
    ("JSON element not an object", "a.json", b'[\n  {"text": "a"},\n  7\n]', ":3: not a JSON "
     "object (got int)"),
    ("CSV missing column", "a.csv", b"instruction\nSay hi\n", ":2: missing field 'output'"),
    ("CSV ragged row", "a.csv", b"instruction,output\nhi,hello\nx,y,z\n",
     ":3: row has 3 cells, the header has 2"),
    ("CSV duplicate column", "a.csv", b"output,instruction,output\na,b,c\n",
     ":1: duplicate column 'output' in header"),
    ("CSV header only", "a.csv", b"instruction,output\n", ": no records"),
    ("parquet wrong schema", "a.parquet", parquet({"question": ["x"], "answer": ["y"]}),
     ":1: cannot tell the format"),
    ("parquet wrong type", "a.parquet", parquet({"messages": ["not a list"]}),
     ":1: field 'messages' must be a list, got str"),
    ("parquet corrupt", "a.parquet", b"PAR1 this is not parquet", ": not a valid Parquet file"),
]


def sha256_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data/raw").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_stage(name: str, capsys) -> tuple[int, str]:
    stage = runpy.run_path(str(REPO / f"stages/{name}.py"), run_name=f"{name}_stage")
    with pytest.raises(SystemExit) as exited:
        stage["pipeline"].run(stage["main"], name, argv=stage_args(name, Path.cwd()))
    return exited.value.code, capsys.readouterr().err


def assert_one_line(err: str, expected: str) -> None:
    lines = err.splitlines()
    assert any(expected in line for line in lines), err[:2000]
    assert all(len(line) < 400 for line in lines), [len(line) for line in lines]
    assert "Traceback" not in err


@pytest.mark.parametrize("name, file_name, content, reason", DATA_CASES,
                         ids=[case[0] for case in DATA_CASES])
def test_bad_data_file(workspace, capsys, name, file_name, content, reason):
    raw = workspace / "data/raw" / file_name
    raw.write_bytes(content)
    (workspace / "data/raw/good.jsonl").write_bytes(GOOD)
    before = sha256_tree(workspace / "data/raw")

    code = cli.main(["validate-data", str(raw)])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert_one_line(err, f"{raw}{reason}")

    code, err = run_stage("prepare", capsys)
    assert code == 1
    assert_one_line(err, f"data/raw/{file_name}{reason}")
    assert err.splitlines()[-1].startswith("prepare: error: 1 bad records in data/raw")
    assert not (workspace / "data/prepared").exists()
    assert not (workspace / "metrics").exists()
    assert sha256_tree(workspace / "data/raw") == before


def test_unsupported_file_type_is_named_by_validate_data(tmp_path, capsys):
    # (the prepare stage reads only data files from data/raw/: a README.txt there is fine)
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello\n")
    assert cli.main(["validate-data", str(path)]) == 1
    assert_one_line(capsys.readouterr().err, f"{path}: unsupported file type '.txt' (use .jsonl, "
                    ".json, .csv, .parquet)")


def test_text_mixed_with_chat_is_rejected(workspace, capsys):
    (workspace / "data/raw/a.jsonl").write_bytes(GOOD + b'{"text": "plain prose"}\n')
    code, err = run_stage("prepare", capsys)
    assert code == 1
    assert_one_line(err, "data/raw/a.jsonl:2: plain-text examples mixed with chat examples")
    assert not (workspace / "data/prepared").exists()


# --- params ------------------------------------------------------------------------

# (case name, dotted key to set (or a YAML text to replace the file), value, expected message)
PARAMS_CASES = [
    ("unknown key", "train.lerning_rate", 1e-4,
     "train.lerning_rate: unknown key (did you mean 'learning_rate'?)"),
    ("unknown nested key", "train.lora.alpah", 8,
     "train.lora.alpah: unknown key (did you mean 'alpha'?)"),
    ("unknown section", "trian.max_steps", 5, "trian: unknown section (did you mean 'train'?)"),
    ("word for an int", "train.batch_size", "eight", "train.batch_size: expected int, got str 'eight'"),
    ("bool for an int", "train.max_steps", True, "train.max_steps: expected int, got bool True"),
    ("list for a float", "train.learning_rate", [1], "train.learning_rate: expected float, got list"),
    ("zero learning rate", "train.learning_rate", 0, "train.learning_rate: must be > 0, got 0.0"),
    ("negative learning rate", "train.learning_rate", -1e-4,
     "train.learning_rate: must be > 0, got -0.0001"),
    ("NaN learning rate", "train.learning_rate", float("nan"),
     "train.learning_rate: must be a finite number, got nan"),
    ("zero rank", "train.lora.r", 0, "train.lora.r: must be > 0, got 0"),
    ("negative rank", "train.lora.r", -8, "train.lora.r: must be > 0, got -8"),
    ("zero max_length", "train.max_length", 0, "train.max_length: must be > 0, got 0"),
    ("negative max_length", "train.max_length", -256, "train.max_length: must be > 0, got -256"),
    ("split ratios sum to 1", "prepare.val_ratio", 0.9,
     "prepare.val_ratio + prepare.test_ratio must be < 1 (the rest is the train split), got 1"),
    ("ratio above 1", "prepare.test_ratio", 1.5, "prepare.test_ratio: must be in [0, 1), got 1.5"),
    ("unknown method", "train.method", "qlora4", "train.method: must be one of lora, qlora, full, "
     "got 'qlora4'"),
    ("empty target modules", "train.lora.target_modules", [],
     "train.lora.target_modules: expected a string or a non-empty list of strings, got []"),
    ("section not a mapping", "train.lora", "big", "train.lora: expected a mapping, got str"),
    ("save_steps off the logging grid", "train.save_steps", 7,
     "train.save_steps: must be a multiple of train.logging_steps (5)"),
    ("negative guard factor", "train.guard.grad_norm_factor", -1.0,
     "train.guard.grad_norm_factor: must be >= 0, got -1.0"),
]


def set_key(params: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return params


@pytest.mark.parametrize("name, key, value, message", PARAMS_CASES,
                         ids=[case[0] for case in PARAMS_CASES])
def test_bad_params_fail_validate_config_and_every_stage(workspace, capsys, name, key, value,
                                                         message):
    params = set_key(yaml.safe_load((workspace / "params.yaml").read_text()), key, value)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    code = cli.main(["validate-config", "params.yaml"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err.startswith(f"tunelab validate-config: error: params.yaml: {message}"), err
    assert len(err.splitlines()) == 1
    for stage_name in ("prepare", "plot"):  # stages reading other sections fail just the same
        code, err = run_stage(stage_name, capsys)
        assert code == 1
        assert err.startswith(f"{stage_name}: error: params.yaml: {message}"), err
        assert len(err.splitlines()) == 1
    assert not (workspace / "data/prepared").exists() and not (workspace / "reports").exists()


def test_invalid_yaml_names_the_line(workspace, capsys):
    (workspace / "params.yaml").write_text("train:\n  max_steps: 5\n  lora: [r: 4\n")
    assert cli.main(["validate-config"]) == 1
    assert capsys.readouterr().err.startswith("tunelab validate-config: error: params.yaml:4: "
                                              "invalid YAML")


def test_target_modules_absent_from_the_model(workspace, capsys, tiny_base_dir):
    shutil.copytree(tiny_base_dir, workspace / "models/base")
    params = set_key(yaml.safe_load((workspace / "params.yaml").read_text()),
                     "train.lora.target_modules", ["q_proj", "qkv_proj"])
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert cli.main(["validate-config"]) == 1
    assert capsys.readouterr().err.startswith(
        "tunelab validate-config: error: params.yaml: train.lora.target_modules: qkv_proj not in "
        "the model (its linear layers: down_proj, gate_proj, k_proj")
    params["train"]["lora"]["target_modules"] = ["q_proj", "v_proj"]
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert cli.main(["validate-config"]) == 0


def test_train_stage_reports_bad_train_params_before_loading_anything(workspace):
    # No models/base, no data: the params error must come first, as one line, exit 1.
    params = set_key(yaml.safe_load((workspace / "params.yaml").read_text()),
                     "train.learning_rate", 0)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = subprocess.run([sys.executable, str(REPO / "stages/train.py"),
                             *stage_args("train", workspace)], cwd=workspace,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == ("train: error: params.yaml: train.learning_rate: must be > 0, "
                             "got 0.0\n")
    assert sorted(p.name for p in workspace.iterdir()) == ["data", "params.yaml"]
