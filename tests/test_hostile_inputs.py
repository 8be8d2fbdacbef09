"""A corpus of malformed data files and params run through the real entry points
(`tunelab validate-data`, `tunelab validate-config`, the prepare and train stages).
Each must give a one-line error naming file:line or the params key and the reason,
exit non-zero, write nothing, and leave data/raw/ byte for byte as it was."""

import gzip
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
     ":1: unknown role 'robot' in message 1 (use system, user, assistant, tool)"),
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
    ("gzip corrupt", "a.jsonl.gz", b"not gzip at all", ": not a valid gzip file"),
    ("gzip of a CSV", "a.csv.gz", gzip.compress(b"instruction,output\nx,y\n"),
     ": unsupported compressed file (use .jsonl.gz or .json.gz)"),
    ("gzip bad line", "a.jsonl.gz", gzip.compress(GOOD + b'{"instruction": 5, "output": "y"}\n'),
     ":2: field 'instruction' must be a str, got int"),
    ("gzip truncated", "a.jsonl.gz", gzip.compress(GOOD * 50)[:-20], ": not a valid gzip file"),
    ("image part", "a.jsonl", b'{"messages": [{"role": "user", "content": [{"type": "image_url", '
     b'"image_url": {"url": "x.png"}}]}, {"role": "assistant", "content": "a cat"}]}\n',
     ":1: multimodal content is not supported ('image_url' part in message 1)"),
    ("part without text", "a.jsonl", b'{"messages": [{"role": "user", "content": [{"type": "text"}]},'
     b' {"role": "assistant", "content": "a"}]}\n', ":1: content part 1 in message 1 must be"),
    ("parts all blank", "a.jsonl", b'{"messages": [{"role": "user", "content": [{"type": "text", '
     b'"text": " "}]}, {"role": "assistant", "content": "a"}]}\n',
     ":1: empty field 'content' in message 1"),
    ("fractional loss weight", "a.jsonl", b'{"messages": [{"role": "user", "content": "q"}, '
     b'{"role": "assistant", "content": "a", "loss_weight": 0.5}]}\n',
     ":1: field 'loss_weight' in message 2 must be 0 or 1 (fractional loss weights are not "
     "supported), got 0.5"),
    ("train flag not a bool", "a.jsonl", b'{"messages": [{"role": "user", "content": "q"}, '
     b'{"role": "assistant", "content": "a", "train": "no"}]}\n',
     ":1: field 'train' in message 2 must be a bool, got str"),
    ("every answer opted out", "a.jsonl", b'{"messages": [{"role": "user", "content": "q"}, '
     b'{"role": "assistant", "content": "a", "train": false}]}\n',
     ":1: every assistant message is opted out of the loss; nothing would train"),
    ("loss asked of a user turn", "a.jsonl", b'{"messages": [{"role": "user", "content": "q", '
     b'"train": true}, {"role": "assistant", "content": "a"}]}\n',
     ":1: only assistant messages carry loss; drop the loss flag in message 1"),
    ("text file not UTF-8", "a.md", b"# Notes\ncaf\xe9\n", ":2: not valid UTF-8"),
    ("text file blank", "a.txt", b"\n \n", ": empty file"),
    # Tool calls (tunelab.data.tool_calls): OpenAI's convention and ShareGPT's.
    ("tool call to an unknown tool", "a.jsonl", GOOD + b'{"tools": [{"name": "get_weather"}], '
     b'"messages": [{"role": "user", "content": "Paris?"}, {"role": "assistant", "tool_calls": '
     b'[{"type": "function", "function": {"name": "get_wether", "arguments": "{}"}}]}, '
     b'{"role": "tool", "content": "18"}, {"role": "assistant", "content": "18."}]}\n',
     ":2: tool call 'get_wether' in message 2 names no tool in 'tools' (did you mean "
     "'get_weather'?)"),
    ("tool call arguments not JSON", "a.jsonl", b'{"tools": [{"name": "get_weather"}], '
     b'"messages": [{"role": "user", "content": "Paris?"}, {"role": "assistant", "tool_calls": '
     b'[{"type": "function", "function": {"name": "get_weather", "arguments": "city=Paris"}}]}, '
     b'{"role": "tool", "content": "18"}, {"role": "assistant", "content": "18."}]}\n',
     ":1: invalid JSON in the arguments of tool call 'get_weather' in message 2: Expecting "
     "value"),
    ("tool call without a result", "a.jsonl", b'{"tools": [{"name": "get_weather"}], '
     b'"conversations": [{"from": "human", "value": "Paris?"}, {"from": "function_call", '
     b'"value": "{\\"name\\": \\"get_weather\\", \\"arguments\\": {}}"}, '
     b'{"from": "gpt", "value": "18."}]}\n',
     ":1: tool call 'get_weather' in message 2 gets no result (a tool message must follow it)"),
    ("tool result without a call", "a.jsonl", b'{"conversations": [{"from": "human", "value": '
     b'"Paris?"}, {"from": "observation", "value": "18"}, {"from": "gpt", "value": "18."}]}\n',
     ":1: the tool result in message 2 answers no tool call (it must follow an assistant "
     "message's tool calls)"),
    ("tools not a list", "a.jsonl", b'{"tools": 7, "messages": [{"role": "user", "content": '
     b'"hi"}, {"role": "assistant", "content": "hello"}]}\n',
     ":1: field 'tools' must be a list of tool schemas (or a JSON string of one), got int"),
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
    # (the prepare stage reads only data files from data/raw/: a notes.docx there is skipped)
    path = tmp_path / "notes.docx"
    path.write_bytes(b"hello\n")
    assert cli.main(["validate-data", str(path)]) == 1
    assert_one_line(capsys.readouterr().err, f"{path}: unsupported file type '.docx' (use .jsonl, "
                    ".json, .csv, .parquet, .jsonl.gz, .json.gz, .txt, .md)")


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
    ("unknown column target", "prepare.columns", {"question": "instrucion"},
     "prepare.columns.question: unknown tunelab field 'instrucion' (did you mean 'instruction'?)"),
    ("column map not a mapping", "prepare.columns", ["question"],
     "prepare.columns: expected a mapping, got list"),
    ("unknown role target", "prepare.roles", {"customer": "usr"},
     "prepare.roles.customer: unknown role 'usr' (did you mean 'user'?)"),
    ("per-file map typo", "prepare.per_file", {"qa/*.csv": {"colums": {"q": "prompt"}}},
     "prepare.per_file.qa/*.csv.colums: unknown key (did you mean 'columns'?)"),
    ("unknown chat template", "model.chat_template", "lama3",
     "model.chat_template: unknown chat template 'lama3' (did you mean 'llama3'?) (use auto, a "
     ".jinja file, or one of chatml, qwen3, llama3, gemma, llama2, mistral, phi3, alpaca)"),
    ("unknown reasoning choice", "train.reasoning", "strip",
     "train.reasoning: must be one of keep, drop, got 'strip'"),
    ("stride past the window", "train.text_stride", 300, "train.text_stride: must be at most "
     "train.max_length (256), got 300: a longer step would skip tokens between windows"),
    # Paths dvc.yaml writes into a shell cmd (${prepare.raw_dir}, ${align.data},
    # "${evaluate.heldout}"): refused by the schema, not only by DVC's check that a dep exists.
    ("shell syntax in raw_dir", "prepare.raw_dir", "data/raw;id", "prepare.raw_dir: "
     "'data/raw;id' has ';', which the shell running the stage's dvc.yaml cmd could read as "
     "syntax (use letters, digits, _ - . /)"),
    ("shell syntax in align.data", "align.data", "data/preferences;touch x", "align.data: "
     "'data/preferences;touch x' has ';', which the shell running the stage's dvc.yaml cmd "
     "could read as syntax (use letters, digits, _ - . /)"),
    ("command substitution in heldout", "evaluate.heldout", "$(touch x)", "evaluate.heldout: "
     "'$(touch x)' has '$', which the shell running the stage's dvc.yaml cmd could read as "
     "syntax (use letters, digits, _ - . /)"),
    ("space in a data path", "align.data", "data/my prefs", "align.data: 'data/my prefs' has a "
     "space, which would split the stage's shell command (dvc.yaml cmd) into two arguments "
     "(use _ or - instead)"),
    ("absolute raw_dir", "prepare.raw_dir", "/etc", "prepare.raw_dir: '/etc' is an absolute "
     "path (give one relative to the repository: DVC tracks files inside it)"),
    ("heldout outside data/heldout", "evaluate.heldout", "data/raw/tickets.jsonl",
     "evaluate.heldout: 'data/raw/tickets.jsonl' is not in data/heldout/, the folder the "
     "evaluate stage depends on in dvc.yaml (move the file there, or \"\" for none)"),
    ("heldout outside the repo", "evaluate.heldout", "data/../../t.jsonl", "evaluate.heldout: "
     "'data/../../t.jsonl' has a '..' part, which can lead out of the repository (give the "
     "path inside it without '..')"),
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


def test_path_params_take_ordinary_paths_and_sweeps_check_them_too(tmp_path):
    from tunelab.config import params, sweep_file
    from tunelab.config.schema import parse
    from tunelab.errors import ParamsError

    assert parse(params.PrepareParams, {"raw_dir": "data/raw-v2/part_1.jsonl"}, "prepare",
                 "params.yaml").raw_dir == "data/raw-v2/part_1.jsonl"
    assert parse(params.EvaluateParams, {"heldout": ""}, "evaluate", "params.yaml").heldout == ""
    with pytest.raises(ParamsError) as refused:  # "" is "none" for evaluate.heldout only
        parse(params.PrepareParams, {"raw_dir": ""}, "prepare", "params.yaml")
    assert str(refused.value) == ("params.yaml: prepare.raw_dir: '' is empty (name a file or "
                                  "folder inside the repository)")
    sweep = tmp_path / "x.yaml"
    sweep.write_text("name: x\nmetric: tuned.loss\nsearch_space:\n"
                     "  prepare.raw_dir: [data/raw, 'data/raw`id`']\n")
    with pytest.raises(sweep_file.SweepError) as refused:  # trials run `dvc exp run -S` with it
        sweep_file.load(sweep)
    assert str(refused.value) == (f"{sweep}: search_space: prepare.raw_dir: 'data/raw`id`' has "
                                  "'`', which the shell running the stage's dvc.yaml cmd could "
                                  "read as syntax (use letters, digits, _ - . /)")


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
