"""Generation: the same tokens as the fp6serve command, batches, streaming, token ids."""

import json

import pytest

import fp6serve
from conftest import MODEL, run_cli

PROMPTS = ["def fibonacci(n):", "Debian is", "import os\nimport sys\n\n", "The package manager"]


def cli_generate(*args):
    out = run_cli("generate", "--model", MODEL, "--device", "cpu", "--json", *args).stdout
    return json.loads(out)


@pytest.mark.parametrize("mode", ["wf6af16", "fp32", "wf4af16"])
def test_greedy_output_equals_the_cli(mode):
    pipe = fp6serve.pipeline(MODEL, quantization_mode=mode, device="cpu", progress=False)
    responses = pipe(PROMPTS, max_new_tokens=24, temperature=0.0)
    assert len(responses) == len(PROMPTS)
    for prompt, r in zip(PROMPTS, responses):
        want = cli_generate("--prompt", prompt, "--quantization-mode", mode, "--max-new-tokens", "24",
                            "--temperature", "0")
        assert r.prompt_ids == want["prompt_ids"], prompt
        assert r.generated_ids == want["generated_ids"], prompt
        assert r.generated_text == want["text"], prompt
        assert r.finish_reason == want["finish_reason"], prompt
        assert r.prompt_length == len(r.prompt_ids) and r.generated_length == len(r.generated_ids)
        assert r.generated_length > 0 and str(r) == r.generated_text


def test_a_model_split_over_two_ranks_answers_alike(pipe):
    # Tensor parallelism on the CPU (ranks as threads: docs/tensor_parallel.md) is an option
    # like any other: the split FP6 model gives the unsplit one's greedy tokens.
    split = fp6serve.pipeline(MODEL, device="cpu", progress=False, tensor_parallel_size=2)
    for prompt in PROMPTS:
        want = pipe(prompt, max_new_tokens=16, temperature=0.0, ignore_eos=True)[0]
        got = split(prompt, max_new_tokens=16, temperature=0.0, ignore_eos=True)[0]
        assert got.generated_ids == want.generated_ids, prompt


def test_greedy_from_token_ids_equals_the_cli(pipe):
    ids = [4091, 326, 282, 439, 262, 1809]
    want = cli_generate("--prompt-ids", ",".join(map(str, ids)), "--max-new-tokens", "16", "--temperature", "0",
                        "--ignore-eos")
    r = pipe(ids, max_new_tokens=16, temperature=0.0, ignore_eos=True)[0]
    assert r.prompt_ids == ids
    assert r.generated_ids == want["generated_ids"]
    assert r.finish_reason == "length" and r.generated_length == 16


def test_sampling_with_a_seed_equals_the_cli(pipe):
    args = dict(max_new_tokens=20, temperature=0.9, top_p=0.95, top_k=40, seed=1234, ignore_eos=True)
    want = cli_generate("--prompt", PROMPTS[1], "--max-new-tokens", "20", "--temperature", "0.9", "--top-p", "0.95",
                        "--top-k", "40", "--seed", "1234", "--ignore-eos")
    assert pipe(PROMPTS[1], **args)[0].generated_ids == want["generated_ids"]
    # Another seed takes another path (the seed is not ignored).
    assert pipe(PROMPTS[1], **dict(args, seed=99))[0].generated_ids != want["generated_ids"]


def test_a_batch_equals_the_prompts_run_alone(pipe):
    batch = pipe(PROMPTS, max_new_tokens=32, temperature=0.0, ignore_eos=True)
    for prompt, r in zip(PROMPTS, batch):
        alone = pipe(prompt, max_new_tokens=32, temperature=0.0, ignore_eos=True)[0]
        assert alone.generated_ids == r.generated_ids, prompt
        assert alone.generated_text == r.generated_text, prompt
    # The prompts are not all answered alike (the batch is not one answer repeated).
    assert len({tuple(r.generated_ids) for r in batch}) == len(PROMPTS)


def test_text_and_token_id_prompts_give_the_same_answer(pipe):
    ids = pipe.tokenizer.encode(PROMPTS[0])
    by_text, by_ids = pipe([PROMPTS[0], ids], max_new_tokens=12, temperature=0.0)
    assert by_text.prompt_ids == ids and by_ids.prompt_ids == ids
    assert by_text.generated_ids == by_ids.generated_ids
    assert pipe([ids, ids], max_new_tokens=4, temperature=0.0)[1].prompt_ids == ids


def test_streaming_pieces_concatenate_to_the_full_text(pipe):
    for prompt in PROMPTS:
        full = pipe(prompt, max_new_tokens=40, temperature=0.0)[0]
        stream = pipe.stream(prompt, max_new_tokens=40, temperature=0.0)
        assert stream.response is None
        pieces = list(stream)
        assert len(pieces) > 1 and all(isinstance(p, str) and p for p in pieces)
        assert "".join(pieces) == full.generated_text, prompt
        assert stream.response.generated_ids == full.generated_ids
        assert stream.response.finish_reason == full.finish_reason
        assert list(stream) == []  # a finished stream stays finished


def test_stop_strings_and_limits(pipe):
    free = pipe(PROMPTS[2], max_new_tokens=40, temperature=0.0, ignore_eos=True)[0]
    assert "\n" in free.generated_text
    stopped = pipe(PROMPTS[2], max_new_tokens=40, temperature=0.0, ignore_eos=True, stop="\n")[0]
    assert stopped.finish_reason == "stop"
    assert stopped.generated_text == free.generated_text.split("\n")[0]
    assert pipe(PROMPTS[2], max_new_tokens=3, temperature=0.0, ignore_eos=True)[0].generated_length == 3
    assert pipe([]) == []


def test_responses_are_what_mii_users_read(pipe):
    r = pipe("Seattle is", max_new_tokens=5, temperature=0.0, ignore_eos=True)[0]
    assert isinstance(r, fp6serve.Response)
    assert (r.prompt_length, r.generated_length, r.finish_reason) == (len(r.prompt_ids), 5, "length")
    assert "generated_text=" in repr(r) and "finish_reason='length'" in repr(r)


def test_the_readmes_python_example_runs():
    """The README's Python example, as written, from the repository root."""
    import os
    import re
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert blocks, "the README has no Python example"
    p = subprocess.run([sys.executable, "-c", blocks[0]], cwd=root, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert re.search(r" (stop|length)\n", p.stdout), p.stdout
