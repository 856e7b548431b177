"""fp6serve: serve large language models with FP6 (FPx) weight-only quantization.

The Python face of fp6serve's C++ library, in the spirit of DeepSpeed-MII::

    import fp6serve
    pipe = fp6serve.pipeline("path/to/model", quantization_mode="wf6af16")
    responses = pipe(["DeepSpeed is", "Seattle is"], max_new_tokens=128)
    print(responses[0].generated_text)

The model is loaded once (every linear layer quantized while loading); each call runs its
prompts together through the continuous-batching engine with the GIL released, and Ctrl-C
stops it cleanly. docs/python.md in the repository describes every argument.
"""

from __future__ import annotations

import numbers
import operator
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from . import _native
from ._native import (
    BadInputError,
    CudaError,
    Error,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfMemoryError,
    Response,
    Stream,
    UnavailableError,
    UnsupportedError,
)

__version__: str = _native.__version__

__all__ = [
    "pipeline",
    "Pipeline",
    "Tokenizer",
    "Response",
    "Stream",
    "Error",
    "InvalidArgumentError",
    "BadInputError",
    "NotFoundError",
    "UnsupportedError",
    "OutOfMemoryError",
    "UnavailableError",
    "CudaError",
    "InternalError",
]

Prompt = Union[str, Sequence[int]]

# The fields of fp6serve::Options (include/fp6serve/options.h) and their Python types.
_OPTIONS: Dict[str, type] = {
    "quantization_mode": str,
    "quantization_scale": str,
    "quantize_lm_head": bool,
    "progress": bool,
    "device": str,
    "threads": int,
    "cpu_isa": str,
    "cuda_graphs": bool,
    "fpx_crossover": int,
    "tensor_parallel_size": int,
    "max_batch_tokens": int,
    "max_num_seqs": int,
    "max_model_len": int,
    "kv_block_size": int,
    "kv_cache_bytes": int,
    "kv_cache_blocks": int,
    "gpu_memory_utilization": float,
}

# The fields of fp6serve::GenerateOptions; "ids" are lists of token ids, "strs" lists of str.
_GENERATE: Dict[str, Any] = {
    "max_new_tokens": int,
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "min_p": float,
    "repetition_penalty": float,
    "presence_penalty": float,
    "frequency_penalty": float,
    "seed": int,
    "stop": "strs",
    "stop_token_ids": "ids",
    "ignore_eos": bool,
    "skip_special_tokens": bool,
    "add_special_tokens": bool,
}

_INT32_MAX = 2**31 - 1
# The C++ types of the int fields that are not int64_t.
_INT_RANGES = {"threads": (-(2**31), _INT32_MAX), "seed": (0, 2**64 - 1), "kv_cache_bytes": (0, 2**64 - 1)}


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check(name: str, value: Any, kind: Any) -> Any:
    """value converted to what the C++ field takes; TypeError naming `name` if it cannot be."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"{name} must be a bool, not {_type_name(value)}")
    if kind is int:
        value = _int(name, value, "an int")
        low, high = _INT_RANGES.get(name, (-(2**63), 2**63 - 1))
        if value < 0 and low == 0:
            raise InvalidArgumentError(f"{name} must not be negative, got {value}")
        if not low <= value <= high:
            raise InvalidArgumentError(f"{name} = {value} is out of range [{low}, {high}]")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a float, not {_type_name(value)}")
        return float(value)
    if kind is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"{name} must be a str, not {_type_name(value)}")
    if kind == "strs":
        if isinstance(value, str):
            return [value]
        if not isinstance(value, Sequence) or not all(isinstance(s, str) for s in value):
            raise TypeError(f"{name} must be a str or a list of str, not {_type_name(value)}")
        return list(value)
    if kind == "ids":
        return _ids(name, value)
    raise AssertionError(kind)


def _int(name: str, value: Any, what: str) -> int:
    """value as an int (anything with __index__ but bool); TypeError naming `name` and `what`."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, not bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be {what}, not {_type_name(value)}") from None


def _ids(name: str, value: Any) -> List[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of token ids (int), not {_type_name(value)}")
    out = []
    for i, v in enumerate(value):
        v = _int(f"{name}[{i}]", v, "an int (a token id)")
        if not 0 <= v <= _INT32_MAX:
            raise InvalidArgumentError(f"{name}[{i}] = {v} is not a token id (0 to {_INT32_MAX})")
        out.append(v)
    return out


def _options(fields: Mapping[str, Any], allowed: Mapping[str, Any], what: str) -> Dict[str, Any]:
    out = {}
    for name, value in fields.items():
        if name not in allowed:
            raise TypeError(f"unexpected {what} argument {name!r}; accepted: {', '.join(allowed)}")
        if value is None:
            continue  # unset: the C++ default (the model's generation_config.json for sampling)
        out[name] = _check(name, value, allowed[name])
    return out


def _is_ids(prompt: Any) -> bool:
    return not isinstance(prompt, (str, bytes)) and isinstance(prompt, Sequence)


class Tokenizer:
    """The model's tokenizer (its tokenizer.json), as the pipeline uses it."""

    def __init__(self, native: _native.Pipeline) -> None:
        self._native = native

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        """Token ids of `text`; add_special_tokens adds what the model's post-processor adds (BOS)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {_type_name(text)}")
        return self._native.encode(text, _check("add_special_tokens", add_special_tokens, bool))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """The text of token ids (ids the tokenizer has no token for decode to "")."""
        return self._native.decode(_ids("ids", ids), _check("skip_special_tokens", skip_special_tokens, bool))


class Pipeline:
    """A model loaded for generation; see fp6serve.pipeline()."""

    def __init__(
        self,
        model_dir: Union[str, "os.PathLike[str]"],
        quantization_mode: Optional[str] = None,
        device: str = "auto",
        **options: Any,
    ) -> None:
        model_dir = os.fspath(model_dir)
        if not isinstance(model_dir, str):
            raise TypeError(f"model_dir must be a str or a path, not {_type_name(model_dir)}")
        fields = dict(options, quantization_mode=quantization_mode, device=device)
        self.model_dir = model_dir
        self._native = _native.Pipeline(model_dir, _options(fields, _OPTIONS, "pipeline"))
        self.tokenizer = Tokenizer(self._native)

    def __call__(self, prompts: Union[Prompt, Sequence[Prompt]], **generate: Any) -> List[Response]:
        """Generates for one prompt or a list, all run together; a list of Response, in order.

        A prompt is a str, or a list of token ids (for users who tokenize themselves): so
        pipe("text"), pipe(["a", "b"]), pipe([1, 2, 3]) and pipe([[1, 2], [3]]) all work.
        Keywords: max_new_tokens (128), temperature, top_p, top_k, min_p,
        repetition_penalty, presence_penalty, frequency_penalty, seed, stop (str or list),
        stop_token_ids, ignore_eos, skip_special_tokens, add_special_tokens; unset sampling
        keywords take the model's generation_config.json, else greedy.
        """
        options = _options(generate, _GENERATE, "generation")
        if isinstance(prompts, str) or (_is_ids(prompts) and len(prompts) > 0 and not isinstance(prompts[0], str)
                                        and not _is_ids(prompts[0])):
            prompts = [prompts]  # one prompt: a text, or a list of token ids
        elif not _is_ids(prompts):
            raise TypeError(f"prompts must be a str, a list of token ids or a list of those, not {_type_name(prompts)}")
        ids = [self._prompt_ids(i, p, options) for i, p in enumerate(prompts)]
        if not ids:
            return []
        return self._native.generate(ids, options)

    def stream(self, prompt: Prompt, **generate: Any) -> Stream:
        """One prompt's generated text as it comes: an iterator of str pieces.

        The pieces concatenate to the response's generated_text; after the loop,
        stream.response holds the Response. Leaving the loop early (or stream.close())
        cancels the rest; stream.cancel() may be called from another thread.
        """
        options = _options(generate, _GENERATE, "generation")
        return self._native.stream(self._prompt_ids(None, prompt, options), options)

    def cancel(self) -> None:
        """Stops every call of this pipeline in progress, from any thread: they return what was
        generated so far with finish_reason "cancelled"."""
        self._native.cancel()

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, str]],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        chat_template: Optional[str] = None,
    ) -> Union[str, List[int]]:
        """The conversation rendered by the model's chat template (or `chat_template`).

        messages: dicts with "role" and "content" (str). Returns the text, or with
        tokenize=True its token ids. The template writes BOS itself: generate from the text
        with add_special_tokens=False, or pass the ids.
        """
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
            raise TypeError(f"messages must be a list of {{'role', 'content'}} dicts, not {_type_name(messages)}")
        turns = []
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping):
                raise TypeError(f"messages[{i}] must be a dict with 'role' and 'content', not {_type_name(m)}")
            extra = sorted(set(m) - {"role", "content"})
            if extra:
                raise InvalidArgumentError(f"messages[{i}] has {', '.join(map(repr, extra))}: fp6serve's chat templates "
                                 "take 'role' and 'content' only")
            for key in ("role", "content"):
                if not isinstance(m.get(key), str):
                    raise TypeError(f"messages[{i}][{key!r}] must be a str, not {_type_name(m.get(key))}")
            turns.append((m["role"], m["content"]))
        if chat_template is not None and not isinstance(chat_template, str):
            raise TypeError(f"chat_template must be a str (Jinja source), not {_type_name(chat_template)}")
        text = self._native.apply_chat_template(
            turns, _check("add_generation_prompt", add_generation_prompt, bool), chat_template or "")
        if _check("tokenize", tokenize, bool):
            return self.tokenizer.encode(text, add_special_tokens=False)
        return text

    def describe(self) -> str:
        """The model, its mode, device and memory, in one line."""
        return self._native.describe()

    def __repr__(self) -> str:
        return f"fp6serve.Pipeline({self.model_dir!r})"

    def _prompt_ids(self, index: Optional[int], prompt: Any, options: Dict[str, Any]) -> List[int]:
        name = "prompt" if index is None else f"prompts[{index}]"
        if isinstance(prompt, str):
            return self._native.encode(prompt, options.get("add_special_tokens", True))
        if _is_ids(prompt):
            return _ids(name, prompt)
        raise TypeError(f"{name} must be a str or a list of token ids, not {_type_name(prompt)}")


def pipeline(
    model_dir: Union[str, "os.PathLike[str]"],
    quantization_mode: Optional[str] = None,
    device: str = "auto",
    **options: Any,
) -> Pipeline:
    """Loads a model for generation, as mii.pipeline does.

    model_dir: a Hugging Face checkpoint directory (config.json, *.safetensors,
    tokenizer.json) or the output of `fp6serve quantize`.
    quantization_mode: "wf6af16" (FP6, e2m3 or e3m2 per layer), "wf5af16", "wf4af16", any
    "eXmY" (that format in every layer, e.g. "e3m2"), or "fp16", "bf16", "fp32"; None:
    wf6af16, or the mode a prequantized checkpoint was written in.
    device: "auto" (the GPU when there is one), "cpu" or "cuda".
    options: the other fields of fp6serve::Options (quantization_scale, threads,
    max_batch_tokens, max_model_len, kv_cache_bytes, gpu_memory_utilization, ...;
    docs/python.md).
    """
    return Pipeline(model_dir, quantization_mode=quantization_mode, device=device, **options)
