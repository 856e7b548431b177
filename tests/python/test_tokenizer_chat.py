"""The tokenizer and the chat template, as the pipeline and the fp6serve command use them."""

import json

from conftest import MODEL, run_cli

USER = [{"role": "user", "content": "What is Debian?"}]


def test_encode_and_decode_round_trip(pipe):
    tok = pipe.tokenizer
    for text in ["def fibonacci(n):", "Debian is a free operating system.", "é€😀 naïve", "  two  spaces\n\tand tabs"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids and all(isinstance(i, int) for i in ids)
        assert tok.decode(ids) == text
        with_bos = tok.encode(text)
        assert with_bos == [4091] + ids  # <|begin_of_text|>, the post-processor's
        assert tok.decode(with_bos) == text
        assert tok.decode(with_bos, skip_special_tokens=False) == "<|begin_of_text|>" + text
    # A piece of a character decodes to U+FFFD, not to an exception.
    ids = tok.encode("é", add_special_tokens=False)
    assert "\ufffd" in tok.decode(ids[:1]) or len(ids) == 1


def test_the_chat_template_renders_as_transformers_does(pipe):
    text = pipe.apply_chat_template([{"role": "system", "content": "Be brief. "}] + USER)
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nWhat is Debian?<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    no_prompt = pipe.apply_chat_template(USER, add_generation_prompt=False)
    assert no_prompt == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is Debian?<|eot_id|>"
    ids = pipe.apply_chat_template(USER, tokenize=True)
    assert ids == pipe.tokenizer.encode(pipe.apply_chat_template(USER), add_special_tokens=False)
    assert ids.count(4091) == 1 and ids[0] == 4091  # BOS once: the template's
    assert pipe.apply_chat_template(USER, chat_template="{{ bos_token }}|{{ messages[0]['role'] }}") == \
        "<|begin_of_text|>|user"


def test_a_chat_prompt_generates_what_generate_chat_does(pipe):
    want = json.loads(run_cli("generate", "--model", MODEL, "--device", "cpu", "--chat", "--prompt", USER[0]["content"],
                              "--max-new-tokens", "24", "--temperature", "0", "--json").stdout)
    ids = pipe.apply_chat_template(USER, tokenize=True)
    assert ids == want["prompt_ids"]
    r = pipe(ids, max_new_tokens=24, temperature=0.0)[0]
    assert r.generated_ids == want["generated_ids"] and r.generated_text == want["text"]
    # The same through the text, without a second BOS.
    text = pipe.apply_chat_template(USER)
    assert pipe(text, add_special_tokens=False, max_new_tokens=24, temperature=0.0)[0].generated_ids == \
        want["generated_ids"]
