# Type stubs of the extension module fp6serve._native (python/native.cc). Users import these
# names from fp6serve; the Pipeline here is the raw one under fp6serve.Pipeline.
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

__version__: str

class Error(Exception):
    """Base of every fp6serve error; `kind` names the fp6serve::ErrorKind."""

    kind: str

class InvalidArgumentError(Error, ValueError):
    """A parameter or request that can never be valid."""

class BadInputError(Error, ValueError):
    """A malformed file or document: checkpoint, config, tokenizer, chat template."""

class NotFoundError(Error, FileNotFoundError):
    """A file, tensor or name that does not exist (a missing model directory)."""

class UnsupportedError(Error, NotImplementedError):
    """Valid, but not something fp6serve does (a model_type, a format, no GPU)."""

class OutOfMemoryError(Error, MemoryError):
    """Host or device memory ran out."""

class UnavailableError(Error, OSError):
    """The system refused a resource: a port in use, an address not ours."""

class CudaError(Error, RuntimeError):
    """A CUDA or cuBLAS call failed."""

class InternalError(Error, RuntimeError):
    """A broken invariant: a bug in fp6serve."""

class Response:
    """One prompt's answer."""

    @property
    def generated_text(self) -> str: ...
    @property
    def prompt_length(self) -> int: ...
    @property
    def generated_length(self) -> int: ...
    @property
    def finish_reason(self) -> str:
        """"stop" (EOS or a stop string), "length" (max_new_tokens or the context), "cancelled"."""
    @property
    def prompt_ids(self) -> List[int]: ...
    @property
    def generated_ids(self) -> List[int]: ...

class Stream(Iterator[str]):
    """One prompt's generated text, piece by piece."""

    def __iter__(self) -> "Stream": ...
    def __next__(self) -> str: ...
    def cancel(self) -> None:
        """Stops the generation (from any thread); the iterator then ends, finish_reason "cancelled"."""
    def close(self) -> None:
        """Cancels, waits until the engine let go, and drops the pieces not read."""
    @property
    def response(self) -> Optional[Response]:
        """The Response once the iterator has ended (or the stream was closed); None before."""

class Pipeline:
    def __init__(self, model_dir: str, options: Dict[str, Any]) -> None: ...
    def generate(self, prompts: Sequence[Sequence[int]], options: Dict[str, Any]) -> List[Response]: ...
    def stream(self, prompt: Sequence[int], options: Dict[str, Any]) -> Stream: ...
    def cancel(self) -> None: ...
    def encode(self, text: str, add_special_tokens: bool) -> List[int]: ...
    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str: ...
    def apply_chat_template(
        self, messages: Sequence[Tuple[str, str]], add_generation_prompt: bool, chat_template: str
    ) -> str: ...
    def describe(self) -> str: ...
