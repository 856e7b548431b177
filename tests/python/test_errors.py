"""fp6serve's errors as Python exceptions of the right types, with the library's messages;
none of them takes the interpreter down or leaves the pipeline unusable."""

import json
import os

import pytest

import fp6serve
from conftest import MODEL


def test_a_missing_model_is_file_not_found(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match="model directory .*no-such-model does not exist") as e:
        fp6serve.pipeline(missing, device="cpu")
    assert isinstance(e.value, fp6serve.Error) and isinstance(e.value, fp6serve.NotFoundError)
    assert e.value.kind == "not_found"
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        fp6serve.pipeline(str(tmp_path), device="cpu")


def test_a_malformed_model_is_a_value_error(tmp_path):
    (tmp_path / "config.json").write_text("{bad")
    with pytest.raises(fp6serve.BadInputError, match="config.json: malformed JSON") as e:
        fp6serve.pipeline(str(tmp_path), device="cpu")
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("options, error, message", [
    (dict(quantization_mode="int3"), ValueError, "unknown quantization mode 'int3'"),
    (dict(device="tpu"), ValueError, "device 'tpu' is not one of auto, cpu, cuda"),
    (dict(max_batch_tokens=0), ValueError, "max_batch_tokens must be at least 1"),
    (dict(tensor_parallel_size=3), ValueError, r"tensor_parallel_size 3: the model's num_attention_heads \(4\)"),
    (dict(bogus=1), TypeError, "unexpected pipeline argument 'bogus'"),
    (dict(threads="2"), TypeError, "threads must be an int, not str"),
    (dict(progress=1), TypeError, "progress must be a bool"),
    (dict(gpu_memory_utilization=0.5), ValueError, "gpu_memory_utilization applies to the GPU, not to device cpu"),
    (dict(gpu_memory_utilization="half"), TypeError, "gpu_memory_utilization must be a float"),
])
def test_bad_pipeline_arguments(options, error, message):
    options.setdefault("device", "cpu")
    with pytest.raises(error, match=message):
        fp6serve.pipeline(MODEL, **options)


def test_cuda_without_a_cuda_build_or_a_gpu_is_not_implemented():
    try:
        fp6serve.pipeline(MODEL, device="cuda", progress=False)  # loads where a GPU is
    except NotImplementedError as e:
        assert isinstance(e, fp6serve.UnsupportedError)
        assert "CUDA backend was not built" in str(e) or "no CUDA GPU is visible" in str(e), str(e)


@pytest.mark.parametrize("prompts, options, error, message", [
    ("x", dict(top_p=2.0), ValueError, r"top_p must be in \(0, 1\], got 2"),
    ("x", dict(max_new_tokens=100000), ValueError, "maximum context length is 1024 tokens"),
    ([99999], {}, ValueError, "token id 99999 is outside the vocabulary"),
    ([-1], {}, ValueError, r"prompts\[0\]\[0\] = -1 is not a token id"),
    ([[]], {}, ValueError, "the prompt is empty"),
    ("x", dict(temperature="hot"), TypeError, "temperature must be a float, not str"),
    ("x", dict(seed=-1), ValueError, "seed must not be negative"),
    ("x", dict(stop=3), TypeError, "stop must be a str or a list of str"),
    ("x", dict(foo=1), TypeError, "unexpected generation argument 'foo'"),
    (3, {}, TypeError, "prompts must be a str, a list of token ids or a list of those"),
    ([1, "a"], {}, TypeError, r"prompts\[0\]\[1\] must be an int"),
])
def test_bad_generation_arguments_leave_the_pipeline_usable(pipe, prompts, options, error, message):
    with pytest.raises(error, match=message):
        pipe(prompts, **options)
    assert pipe("x", max_new_tokens=2, ignore_eos=True)[0].generated_length == 2


def test_bad_stream_arguments(pipe):
    with pytest.raises(ValueError, match="top_p must be in"):
        pipe.stream("x", top_p=2.0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        pipe.stream([99999])
    with pytest.raises(TypeError, match="prompt must be a str or a list of token ids"):
        pipe.stream(3)
    assert "".join(pipe.stream("x", max_new_tokens=2)) is not None


def test_a_bad_prompt_in_a_batch_queues_nothing(pipe):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        pipe([[4091, 326], [99999]], max_new_tokens=1000, ignore_eos=True)
    r = pipe("x", max_new_tokens=2, ignore_eos=True)[0]
    assert r.finish_reason == "length"


def test_chat_template_errors(pipe, tmp_path):
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(fp6serve.BadInputError, match="chat template syntax error at 1:7"):
        pipe.apply_chat_template(msgs, chat_template="{{ bad")
    with pytest.raises(fp6serve.InvalidArgumentError, match="^no$"):
        pipe.apply_chat_template(msgs, chat_template="{{ raise_exception('no') }}")
    with pytest.raises(ValueError, match=r"messages\[0\] has 'name'"):
        pipe.apply_chat_template([{"role": "user", "content": "hi", "name": "x"}])
    with pytest.raises(TypeError, match=r"messages\[0\]\['content'\] must be a str"):
        pipe.apply_chat_template([{"role": "user", "content": 3}])
    # A model without a template: the same weights, its template removed.
    for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
        os.symlink(os.path.join(MODEL, f), tmp_path / f)
    with open(os.path.join(MODEL, "tokenizer_config.json")) as f:
        config = json.load(f)
    del config["chat_template"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    bare = fp6serve.pipeline(str(tmp_path), device="cpu", progress=False)
    with pytest.raises(ValueError, match="ships no chat template"):
        bare.apply_chat_template(msgs)
    assert bare.apply_chat_template(msgs, chat_template="{{ messages[0]['content'] }}") == "hi"


def test_token_ids_outside_the_vocabulary_decode_to_nothing(pipe):
    assert pipe.tokenizer.decode([99999]) == ""
    with pytest.raises(TypeError, match=r"ids\[0\] must be an int"):
        pipe.tokenizer.decode(["a"])
