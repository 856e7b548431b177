// fp6serve._native: the extension module under the Python package (python/fp6serve/), over
// the public C++ API (include/fp6serve/) only. The package's Python code checks argument
// names and types and calls these; docs/python.md is the user's page.
//
// The GIL is released whenever C++ works (loading, generating, waiting, tokenizing). A
// waiting call wakes every kSignalPoll to run Python's signal handlers: Ctrl-C (or
// _thread.interrupt_main()) cancels its requests, waits until the engine has let them go,
// and raises KeyboardInterrupt; the Pipeline stays usable. fp6serve::Error becomes the
// Python exception of its kind (register_errors).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fp6serve/error.h"
#include "fp6serve/options.h"
#include "fp6serve/pipeline.h"

namespace py = pybind11;

namespace fp6serve {
namespace {

constexpr std::chrono::milliseconds kSignalPoll{50};

// Text for Python: bytes that are not UTF-8 (a decode of a partial character) become U+FFFD
// instead of a UnicodeDecodeError.
py::str text(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (!o) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

// ---- errors ----------------------------------------------------------------------------------
// fp6serve.Error, and one subclass per ErrorKind that is also the built-in exception a Python
// user expects: ValueError for bad arguments and malformed files, FileNotFoundError for what
// does not exist, NotImplementedError for what fp6serve does not do, MemoryError, OSError for
// a resource the system refused, and RuntimeError for CUDA failures and bugs. A kind missing here arrives as
// fp6serve.Error.
struct ErrorTypes {
  PyObject* base = nullptr;
  std::vector<std::pair<ErrorKind, PyObject*>> by_kind;
};
ErrorTypes errors;

void register_errors(py::module_& m) {
  errors.base =
      PyErr_NewExceptionWithDoc("fp6serve.Error", "Base of every fp6serve error; `kind` names the fp6serve::ErrorKind.",
                                PyExc_Exception, nullptr);
  if (!errors.base) throw py::error_already_set();
  m.add_object("Error", py::handle(errors.base));
  struct Kind {
    ErrorKind kind;
    const char* name;
    PyObject* builtin;
    const char* doc;
  };
  const Kind kinds[] = {
      {ErrorKind::kInvalidArgument, "InvalidArgumentError", PyExc_ValueError,
       "A parameter or request that can never be valid."},
      {ErrorKind::kBadInput, "BadInputError", PyExc_ValueError,
       "A malformed file or document: checkpoint, config, tokenizer, chat template."},
      {ErrorKind::kNotFound, "NotFoundError", PyExc_FileNotFoundError,
       "A file, tensor or name that does not exist (a missing model directory)."},
      {ErrorKind::kUnsupported, "UnsupportedError", PyExc_NotImplementedError,
       "Valid, but not something fp6serve does (a model_type, a format, no GPU)."},
      {ErrorKind::kOutOfMemory, "OutOfMemoryError", PyExc_MemoryError, "Host or device memory ran out."},
      {ErrorKind::kUnavailable, "UnavailableError", PyExc_OSError,
       "The system refused a resource: a port in use, an address not ours."},
      {ErrorKind::kCuda, "CudaError", PyExc_RuntimeError, "A CUDA or cuBLAS call failed."},
      {ErrorKind::kInternal, "InternalError", PyExc_RuntimeError, "A broken invariant: a bug in fp6serve."},
  };
  for (const Kind& k : kinds) {
    const std::string qualified = std::string("fp6serve.") + k.name;
    py::tuple bases = py::make_tuple(py::handle(errors.base), py::handle(k.builtin));
    PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), k.doc, bases.ptr(), nullptr);
    if (!type) throw py::error_already_set();
    py::handle(type).attr("kind") = error_kind_name(k.kind);
    errors.by_kind.emplace_back(k.kind, type);
    m.add_object(k.name, py::handle(type));
  }
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      PyObject* type = errors.base;
      for (const auto& [kind, t] : errors.by_kind)
        if (kind == e.kind()) type = t;
      PyErr_SetString(type, e.what());
    }
  });
}

// ---- options: the package's Python code has checked names and types -------------------------
Options to_options(const py::dict& d) {
  Options o;
  for (auto [key, value] : d) {
    const std::string k = py::cast<std::string>(key);
    if (k == "quantization_mode")
      o.quantization_mode = py::cast<std::string>(value);
    else if (k == "quantization_scale")
      o.quantization_scale = py::cast<std::string>(value);
    else if (k == "quantize_lm_head")
      o.quantize_lm_head = py::cast<bool>(value);
    else if (k == "progress")
      o.progress = py::cast<bool>(value);
    else if (k == "device")
      o.device = py::cast<std::string>(value);
    else if (k == "threads")
      o.threads = py::cast<int>(value);
    else if (k == "cpu_isa")
      o.cpu_isa = py::cast<std::string>(value);
    else if (k == "cuda_graphs")
      o.cuda_graphs = py::cast<bool>(value);
    else if (k == "fpx_crossover")
      o.fpx_crossover = py::cast<int64_t>(value);
    else if (k == "tensor_parallel_size")
      o.tensor_parallel_size = py::cast<int>(value);
    else if (k == "max_batch_tokens")
      o.max_batch_tokens = py::cast<int64_t>(value);
    else if (k == "max_num_seqs")
      o.max_num_seqs = py::cast<int64_t>(value);
    else if (k == "max_model_len")
      o.max_model_len = py::cast<int64_t>(value);
    else if (k == "kv_block_size")
      o.kv_block_size = py::cast<int64_t>(value);
    else if (k == "kv_cache_bytes")
      o.kv_cache_bytes = py::cast<size_t>(value);
    else if (k == "kv_cache_blocks")
      o.kv_cache_blocks = py::cast<int64_t>(value);
    else if (k == "gpu_memory_utilization")
      o.gpu_memory_utilization = py::cast<double>(value);
    else
      throw Error(ErrorKind::kInternal, "_native: unknown Options field " + k);
  }
  return o;
}

GenerateOptions to_generate_options(const py::dict& d) {
  GenerateOptions o;
  for (auto [key, value] : d) {
    const std::string k = py::cast<std::string>(key);
    if (k == "max_new_tokens")
      o.max_new_tokens = py::cast<int64_t>(value);
    else if (k == "temperature")
      o.temperature = py::cast<double>(value);
    else if (k == "top_p")
      o.top_p = py::cast<double>(value);
    else if (k == "top_k")
      o.top_k = py::cast<int64_t>(value);
    else if (k == "min_p")
      o.min_p = py::cast<double>(value);
    else if (k == "repetition_penalty")
      o.repetition_penalty = py::cast<double>(value);
    else if (k == "presence_penalty")
      o.presence_penalty = py::cast<double>(value);
    else if (k == "frequency_penalty")
      o.frequency_penalty = py::cast<double>(value);
    else if (k == "seed")
      o.seed = py::cast<uint64_t>(value);
    else if (k == "stop")
      o.stop = py::cast<std::vector<std::string>>(value);
    else if (k == "stop_token_ids")
      o.stop_token_ids = py::cast<std::vector<int32_t>>(value);
    else if (k == "ignore_eos")
      o.ignore_eos = py::cast<bool>(value);
    else if (k == "skip_special_tokens")
      o.skip_special_tokens = py::cast<bool>(value);
    else if (k == "add_special_tokens")
      o.add_special_tokens = py::cast<bool>(value);
    else
      throw Error(ErrorKind::kInternal, "_native: unknown GenerateOptions field " + k);
  }
  o.validate();
  return o;
}

// ---- waiting -------------------------------------------------------------------------------
// Waits (GIL released) until `ready` says so; a signal handler that raises (Ctrl-C) cancels
// `generation`, waits until it stopped and re-raises. Call with the GIL held.
template <typename Ready>
void wait_interruptibly(Generation& generation, Ready ready) {
  for (;;) {
    bool done;
    {
      py::gil_scoped_release unlocked;
      done = ready();
    }
    if (done) return;
    if (PyErr_CheckSignals() != 0) {
      py::error_already_set interrupt;  // takes the pending exception
      {
        py::gil_scoped_release unlocked;
        generation.cancel();
        generation.wait_for(std::chrono::hours(24 * 365));
      }
      throw interrupt;
    }
  }
}

// Deletes a Pipeline without holding the GIL (it cancels and joins the engine's work).
struct ReleasingDelete {
  void operator()(Pipeline* p) const {
    if (PyGILState_Check()) {
      py::gil_scoped_release unlocked;
      delete p;
    } else {
      delete p;
    }
  }
};
using PipelineHolder = std::unique_ptr<Pipeline, ReleasingDelete>;

std::vector<Response> generate(Pipeline& pipe, const std::vector<std::vector<int32_t>>& prompts,
                               const py::dict& options) {
  const GenerateOptions o = to_generate_options(options);
  std::optional<Generation> g;
  {
    py::gil_scoped_release unlocked;
    g.emplace(pipe.start(prompts, o));
  }
  wait_interruptibly(*g, [&] { return g->wait_for(kSignalPoll); });
  py::gil_scoped_release unlocked;
  return g->get();
}

// One prompt's text as it is generated: an iterator of str; `response` once it ended.
class Stream {
 public:
  Stream(py::object owner, Pipeline& pipe, const std::vector<int32_t>& prompt, const GenerateOptions& o)
      : owner_(std::move(owner)), queue_(std::make_shared<Queue>()) {
    py::gil_scoped_release unlocked;
    generation_.emplace(pipe.start({prompt}, o, [q = queue_](size_t, std::string_view text, bool last) {
      std::lock_guard lock(q->mutex);
      if (!text.empty()) q->pieces.emplace_back(text);
      q->last = q->last || last;
      q->wake.notify_all();
    }));
  }
  ~Stream() {
    // Cancels a stream left unfinished (a loop left early) without holding the GIL.
    if (PyGILState_Check()) {
      py::gil_scoped_release unlocked;
      generation_.reset();
    } else {
      generation_.reset();
    }
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  py::str next() {
    std::optional<std::string> piece;
    wait_interruptibly(*generation_, [&] {
      std::unique_lock lock(queue_->mutex);
      queue_->wake.wait_for(lock, kSignalPoll, [&] { return !queue_->pieces.empty() || queue_->last; });
      if (!queue_->pieces.empty()) {
        piece = std::move(queue_->pieces.front());
        queue_->pieces.pop_front();
        return true;
      }
      return queue_->last;
    });
    if (piece) return text(*piece);
    finish();
    throw py::stop_iteration();
  }

  // Stops the generation (from any thread): the iterator yields what was final and ends,
  // response.finish_reason "cancelled".
  void cancel() {
    py::gil_scoped_release unlocked;
    generation_->cancel();
  }

  // Cancels, waits until the engine let go, and drops what was not read.
  void close() {
    cancel();
    finish();
    std::lock_guard lock(queue_->mutex);
    queue_->pieces.clear();
  }

  std::optional<Response> response() const { return response_; }

 private:
  void finish() {
    if (response_) return;
    std::vector<Response> r;
    {
      py::gil_scoped_release unlocked;
      r = generation_->get();
    }
    response_ = std::move(r[0]);
  }

  struct Queue {
    std::mutex mutex;
    std::condition_variable wake;
    std::deque<std::string> pieces;
    bool last = false;
  };
  py::object owner_;  // the Pipeline, kept alive while the stream is
  std::shared_ptr<Queue> queue_;
  std::optional<Generation> generation_;
  std::optional<Response> response_;
};

}  // namespace
}  // namespace fp6serve

PYBIND11_MODULE(_native, m) {
  using namespace fp6serve;
  m.doc() = "fp6serve's C++ library (include/fp6serve/); use the fp6serve package, not this module.";
  m.attr("__version__") = FP6SERVE_VERSION;
  register_errors(m);

  py::class_<Response>(m, "Response", "One prompt's answer.")
      .def_property_readonly("generated_text", [](const Response& r) { return text(r.generated_text); })
      .def_property_readonly("prompt_length", [](const Response& r) { return r.prompt_tokens; })
      .def_property_readonly("generated_length", [](const Response& r) { return r.generated_tokens; })
      .def_readonly("finish_reason", &Response::finish_reason)
      .def_readonly("prompt_ids", &Response::prompt_ids)
      .def_readonly("generated_ids", &Response::generated_ids)
      .def("__str__", [](const Response& r) { return text(r.generated_text); })
      .def("__repr__", [](const Response& r) {
        return "Response(generated_text=" + py::repr(text(r.generated_text)).cast<std::string>() +
               ", prompt_length=" + std::to_string(r.prompt_tokens) +
               ", generated_length=" + std::to_string(r.generated_tokens) + ", finish_reason='" + r.finish_reason +
               "')";
      });

  py::class_<Stream>(m, "Stream", "One prompt's generated text, piece by piece.")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &Stream::next)
      .def("cancel", &Stream::cancel)
      .def("close", &Stream::close)
      .def_property_readonly("response", &Stream::response);

  py::class_<Pipeline, PipelineHolder>(m, "Pipeline")
      .def(py::init([](const std::string& model_dir, const py::dict& options) {
             const Options o = to_options(options);
             py::gil_scoped_release unlocked;
             return PipelineHolder(new Pipeline(model_dir, o));
           }),
           py::arg("model_dir"), py::arg("options"))
      .def("generate", &generate, py::arg("prompts"), py::arg("options"))
      .def(
          "stream",
          [](py::object self, const std::vector<int32_t>& prompt, const py::dict& options) {
            const GenerateOptions o = to_generate_options(options);
            return std::make_unique<Stream>(self, self.cast<Pipeline&>(), prompt, o);
          },
          py::arg("prompt"), py::arg("options"))
      .def("cancel", &Pipeline::cancel, py::call_guard<py::gil_scoped_release>())
      .def("encode", &Pipeline::encode, py::arg("text"), py::arg("add_special_tokens"),
           py::call_guard<py::gil_scoped_release>())
      .def(
          "decode",
          [](const Pipeline& p, const std::vector<int32_t>& ids, bool skip_special_tokens) {
            std::string s;
            {
              py::gil_scoped_release unlocked;
              s = p.decode(ids, skip_special_tokens);
            }
            return text(s);
          },
          py::arg("ids"), py::arg("skip_special_tokens"))
      .def(
          "apply_chat_template",
          [](const Pipeline& p, const std::vector<std::pair<std::string, std::string>>& messages,
             bool add_generation_prompt, const std::string& chat_template) {
            std::vector<Message> turns;
            for (const auto& [role, content] : messages) turns.push_back({role, content});
            std::string s;
            {
              py::gil_scoped_release unlocked;
              s = p.apply_chat_template(turns, add_generation_prompt, chat_template);
            }
            return text(s);
          },
          py::arg("messages"), py::arg("add_generation_prompt"), py::arg("chat_template"))
      .def("describe", &Pipeline::describe, py::call_guard<py::gil_scoped_release>());
}
