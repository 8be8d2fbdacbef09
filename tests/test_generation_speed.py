"""Issue 14's evaluation speed-ups change no answer and no loss beyond float rounding, and
`tunelab bench-generate` reports what it measured, on a tiny random Llama."""

import json
import shutil
import types

import pytest
import torch

from tunelab.bench import generation_speed
from tunelab.chat import stops
from tunelab.data import encoding
from tunelab.errors import DataError
from tunelab.eval import evaluation
from tunelab.models import loading
from tunelab.util import files

MAX_NEW_TOKENS = 6
# Neither sorted nor reversed, so sorting by length regroups the batches.
PROMPT_LENGTHS = (3, 9, 1, 6, 12, 4, 8)
BATCH_SIZE = 3


@pytest.fixture(scope="module")
def tiny(tiny_base_dir):
    return loading.load_trained(tiny_base_dir)


def random_prompts(vocab_size: int, lengths=PROMPT_LENGTHS, shared: int = 5) -> list[list[int]]:
    """Token-id prompts: the same ``shared`` ids (a common prefix), then ``length`` random
    ids each (no special tokens: those are SmolLM2's first ids)."""
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randint(100, vocab_size, (shared,), generator=generator).tolist()
    return [prefix + torch.randint(100, vocab_size, (length,), generator=generator).tolist()
            for length in lengths]


def chat_examples_of_different_lengths(count: int = 7) -> list[dict]:
    return [{"messages": [{"role": "user", "content": "please " * i + f"What colour is thing {i}?"},
                          {"role": "assistant", "content": f"colour {i}" + " indeed" * (i % 3)}],
             "source": f"test.jsonl:{i + 1}"}
            for i in range(count)]


# --- generate --------------------------------------------------------------------------

def test_batch_order_and_a_shared_prefix_change_no_answer(tiny):
    model, tokenizer = tiny
    prompts = random_prompts(len(tokenizer))
    assert len(evaluation.common_prefix(prompts)) == 5
    one_at_a_time = [evaluation.generate_ids(model, tokenizer, [prompt], MAX_NEW_TOKENS, 1)[0]
                     for prompt in prompts]
    assert len({tuple(answer) for answer in one_at_a_time}) > 1  # answers depend on the prompt
    for options in ({"sort_by_length": False}, {"sort_by_length": True}, {"share_prefix": True},
                    {"sort_by_length": False, "share_prefix": True}):
        batched = evaluation.generate_ids(model, tokenizer, prompts, MAX_NEW_TOKENS, BATCH_SIZE,
                                          **options)
        assert batched == one_at_a_time, options
    assert evaluation.generate(model, tokenizer, prompts, MAX_NEW_TOKENS, BATCH_SIZE) == \
        evaluation.decode_answers(tokenizer, one_at_a_time)


class EchoModel:
    """Answers each row with its prompt's last token, EOS and a pad (as model.generate pads a
    finished row while its batch goes on); records each batch's unpadded prompts."""

    device = torch.device("cpu")

    def __init__(self):
        self.batches = []

    def generate(self, input_ids, attention_mask, max_new_tokens, pad_token_id, eos_token_id,
                 **sampling):
        self.batches.append([row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask)])
        last = input_ids[:, -1:]
        eos = eos_token_id[0]  # evaluation passes its stop ids (tunelab.chat.stops)
        return torch.cat([input_ids, last, torch.full_like(last, eos),
                          torch.full_like(last, pad_token_id)], dim=1)


@pytest.mark.parametrize("sort_by_length, batch_order", [
    (True, [[1, 3], [4, 0], [2]]),   # longest first: lengths 6, 5 | 4, 3 | 2
    (False, [[0, 1], [2, 3], [4]]),  # file order
])
def test_answers_come_back_in_the_prompts_order(sort_by_length, batch_order):
    prompts = [[10 + i] * repeat + [100 + i] for i, repeat in enumerate((2, 5, 1, 4, 3))]
    model, tokenizer = EchoModel(), types.SimpleNamespace(pad_token_id=0, eos_token_id=1)
    answers = evaluation.generate_ids(model, tokenizer, prompts, 4, 2, sort_by_length=sort_by_length)
    assert answers == [[100 + i, 1] for i in range(5)]  # own last token and EOS, no pad
    assert model.batches == [[prompts[i] for i in batch] for batch in batch_order]


def test_an_answer_ends_at_its_first_eos_with_no_padding_after_it(tiny):
    model, tokenizer = tiny
    prompts = random_prompts(len(tokenizer))
    # Make the 2nd token the model answers the first prompt with the EOS token.
    stop = evaluation.generate_ids(model, tokenizer, prompts[:1], MAX_NEW_TOKENS, 1)[0][1]
    assert stop != tokenizer.pad_token_id
    stopping = types.SimpleNamespace(pad_token_id=tokenizer.pad_token_id, eos_token_id=stop)
    # Evaluation stops on the model's stop ids: that EOS and the generation config's.
    ends = stops.stop_ids(stopping, model.generation_config)
    expected = []  # transformers alone, one prompt at a time: it stops at EOS, nothing pads
    for prompt in prompts:
        output = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=MAX_NEW_TOKENS,
                                do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=ends)
        expected.append(output[0, len(prompt):].tolist())
    assert expected[0][-1] == stop and len(expected[0]) <= 2
    assert any(len(answer) == MAX_NEW_TOKENS for answer in expected)  # so the batch pads row 0
    for options in ({"sort_by_length": False}, {}, {"share_prefix": True}):
        assert evaluation.generate_ids(model, stopping, prompts, MAX_NEW_TOKENS, len(prompts),
                                       **options) == expected, options


def test_common_prefix_leaves_every_prompt_its_last_token():
    assert evaluation.common_prefix([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == [1, 2, 3]
    assert evaluation.common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == [1, 2]
    assert evaluation.common_prefix([[7, 8], [9, 8]]) == []
    assert evaluation.common_prefix([[5]]) == []
    assert evaluation.common_prefix([]) == []


# --- completion_loss ---------------------------------------------------------------------

def unbatched_loss(model, tokenizer, examples) -> float:
    """The training objective the plain way: one example at a time, logits everywhere."""
    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples:
            encoded = encoding.encode(tokenizer, example, max_length=1 << 30)
            logits = model(input_ids=torch.tensor([encoded.input_ids])).logits[0, :-1]
            targets = torch.tensor(encoded.labels[1:])
            total += torch.nn.functional.cross_entropy(
                logits.float(), targets, ignore_index=encoding.IGNORE_INDEX, reduction="sum").item()
            count += int((targets != encoding.IGNORE_INDEX).sum())
    return total / count


def test_loss_at_answer_positions_only_equals_the_full_logits_loss(tiny, tiny_base_dir,
                                                                  make_tiny_adapter):
    from peft import PeftModel

    base, tokenizer = tiny
    lora = PeftModel.from_pretrained(loading.load_base(tiny_base_dir),
                                     str(make_tiny_adapter("answer_only_loss", seed=4))).eval()
    examples = chat_examples_of_different_lengths() + [{"text": "plain text trains on every token"}]
    losses = {}
    for name, model in (("base", base), ("lora", lora)):
        # The fast path is really taken (else both sides below would be the full logits).
        body, head = evaluation.body_and_head(model)
        causal_lm = model.get_base_model() if name == "lora" else model
        assert body is causal_lm.model and head is causal_lm.lm_head
        answer_only = evaluation.completion_loss(model, tokenizer, examples, BATCH_SIZE)
        full = evaluation.completion_loss(model, tokenizer, examples, BATCH_SIZE,
                                          loss_positions_only=False)
        assert answer_only == pytest.approx(full, abs=1e-6), name
        assert answer_only == pytest.approx(unbatched_loss(model, tokenizer, examples), abs=1e-5)
        losses[name] = answer_only
    assert abs(losses["lora"] - losses["base"]) > 1e-3  # the adapter's layers ran in the body


def test_a_head_that_rescales_logits_gets_the_models_own_forward():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    model = Gemma2ForCausalLM(Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32,
                                           num_hidden_layers=1, num_attention_heads=2,
                                           num_key_value_heads=1, head_dim=8))
    assert model.config.final_logit_softcapping is not None  # tanh after lm_head
    assert evaluation.body_and_head(model) is None


# --- tunelab bench-generate ----------------------------------------------------------------

BENCH_NEW_TOKENS, BENCH_BATCH_SIZES, BENCH_EXAMPLES = 4, (2, 5), 5


def early_stopping_base(tiny_base_dir, example: dict, folder):
    """A copy of the tiny base whose tokenizer's EOS is the 2nd token the model answers
    ``example`` with: that answer ends early, and its batch pads it while the others go on."""
    shutil.copytree(tiny_base_dir, folder)
    model, tokenizer = loading.load_trained(folder)
    answer = evaluation.generate_ids(model, tokenizer, [encoding.prompt_ids(tokenizer, example)],
                                     BENCH_NEW_TOKENS, 1)[0]
    assert len(answer) == BENCH_NEW_TOKENS and answer[1] != tokenizer.pad_token_id
    tokenizer.eos_token_id = answer[1]
    tokenizer.save_pretrained(folder)
    assert loading.load_trained(folder)[1].eos_token_id == answer[1]
    return folder


def tokens_one_at_a_time(base_dir, adapter_dir, examples) -> dict[str, int]:
    """Per model, new tokens up to and including EOS, counted by transformers alone (one
    prompt at a time: generation stops at EOS and nothing is padded)."""
    counts = {}
    for name, trained in (("base", None), ("tuned", adapter_dir)):
        model, tokenizer = loading.load_trained(base_dir, trained)
        counts[name] = 0
        for example in examples:
            prompt = encoding.prompt_ids(tokenizer, example)
            # An explicit mask: with pad != EOS transformers would infer one from the pad id
            # and mask the prompt's own <|im_end|> tokens (pad is <|im_end|> here).
            ids = torch.tensor([prompt])
            output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                    max_new_tokens=BENCH_NEW_TOKENS,
                                    do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=tokenizer.eos_token_id)
            counts[name] += output.shape[1] - len(prompt)
    return counts


@pytest.fixture(scope="module")
def bench_run(tiny_base_dir, make_tiny_adapter, tmp_path_factory):
    work = tmp_path_factory.mktemp("bench_generate")
    examples = chat_examples_of_different_lengths(BENCH_EXAMPLES)
    files.write_jsonl_atomic(work / "test.jsonl", examples + [{"text": "no prompt to answer"}])
    base_dir = early_stopping_base(tiny_base_dir, examples[0], work / "base")
    adapter_dir = make_tiny_adapter("bench_generate", seed=3)
    progress = []
    result = generation_speed.run_generation_bench(
        base_dir, adapter_dir, work / "test.jsonl", work / "generation.json",
        batch_sizes=BENCH_BATCH_SIZES, max_new_tokens=BENCH_NEW_TOKENS, repeats=1,
        on_progress=progress.append)
    return work, base_dir, adapter_dir, examples, result, progress


def test_bench_writes_what_it_returns_with_its_settings(bench_run):
    work, base_dir, adapter_dir, _, result, progress = bench_run
    assert files.read_json(work / "generation.json") == json.loads(json.dumps(result))
    assert result["settings"] == {
        "base_dir": str(base_dir), "adapter_dir": str(adapter_dir),
        "test_file": str(work / "test.jsonl"), "examples": BENCH_EXAMPLES,
        "batch_sizes": list(BENCH_BATCH_SIZES), "max_new_tokens": BENCH_NEW_TOKENS,
        "repeats": 1, "variants": ["before", "after", "after_shared_prefix"],
        "decoding": "greedy", "dtype": "fp32"}
    assert result["machine"]["cpu_cores"] >= 1 and result["machine"]["torch_threads"] >= 1
    assert progress == [f"bench-generate: {model}, batch {size}: 1 x before, after, "
                        "after_shared_prefix ..." for model in ("base", "tuned")
                        for size in BENCH_BATCH_SIZES]


def test_bench_counts_real_new_tokens_and_same_answers(bench_run):
    _, base_dir, adapter_dir, examples, result, _ = bench_run
    runs = result["runs"]
    assert [(row["model"], row["batch_size"], row["variant"]) for row in runs] == [
        (model, size, variant) for model in ("base", "tuned") for size in BENCH_BATCH_SIZES
        for variant in ("before", "after", "after_shared_prefix")]
    expected = tokens_one_at_a_time(base_dir, adapter_dir, examples)
    assert expected["base"] < BENCH_EXAMPLES * BENCH_NEW_TOKENS  # one answer ended early
    for row in runs:
        where = (row["model"], row["batch_size"], row["variant"])
        assert row["generated_tokens"] == expected[row["model"]], where
        assert row["answers_differing_from_before"] == 0 and row["differing_examples"] == [], where
        seconds, rate = row["seconds"], row["tokens_per_s"]
        assert 0 < seconds["min"] == seconds["median"] == seconds["max"]  # one repeat
        assert rate["min"] == rate["median"] == rate["max"]
        assert rate["median"] == pytest.approx(row["generated_tokens"] / seconds["median"], rel=0.01)
        if row["variant"] == "before":
            assert row["speedup_vs_before"] == 1.0


def test_bench_refuses_unknown_variants_and_a_split_without_chat(tmp_path, tiny_base_dir):
    files.write_jsonl_atomic(tmp_path / "test.jsonl", [{"text": "no prompt to answer"}])
    with pytest.raises(DataError, match=r"^variants: fastest: choose from before, after, "
                                        r"after_shared_prefix, after_static_cache$"):
        generation_speed.run_generation_bench(tiny_base_dir, tiny_base_dir, tmp_path / "test.jsonl",
                                              tmp_path / "out.json", variants=("after", "fastest"))
    with pytest.raises(DataError, match=r"test\.jsonl: no chat examples \(records with 'messages'\)"):
        generation_speed.run_generation_bench(tiny_base_dir, tiny_base_dir, tmp_path / "test.jsonl",
                                              tmp_path / "out.json")
    with pytest.raises(DataError, match=r"missing\.jsonl: file not found"):
        generation_speed.run_generation_bench(tiny_base_dir, tiny_base_dir, tmp_path / "missing.jsonl",
                                              tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()
