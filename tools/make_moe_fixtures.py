#!/usr/bin/env python3
"""Makes the tiny mixture-of-experts fixtures of tests/data with Hugging Face transformers.

    python3 tools/make_moe_fixtures.py [--out tests/data] [--seed 20240611] [--only tiny-mixtral]

Needs torch, transformers 5.x (4.x works where it has the model classes), safetensors and
numpy; runs on the CPU in well under a minute (a GPU, if torch sees one, only adds the FP16
noise floor the GPU tests compare against; without one that floor comes from torch's CPU FP16).

It writes, for each of

  tiny-mixtral    MixtralForCausalLM: 8 experts, top-2 renormalized (softmax of the chosen),
                  GQA 4/2, head_dim 16, untied embeddings; tiny-llama's tokenizer and prompts
  tiny-qwen2-moe  Qwen2MoeForCausalLM: 8 experts, top-2 NOT renormalized (norm_topk_prob
                  false), a shared expert with its sigmoid gate, q/k/v bias, tied embeddings;
                  tiny-qwen2's tokenizer and prompts
  tiny-qwen3-moe  Qwen3MoeForCausalLM: 8 experts, top-3 renormalized (norm_topk_prob true),
                  q/k norms, 3 layers of which layer 1 is a dense MLP (mlp_only_layers);
                  tiny-qwen2's tokenizer and prompts

a directory tests/data/<name>/ in the recipe of the dense fixtures (tests/data/README.md):

  config.json, generation_config.json       as transformers writes them (dtype float16)
  model.safetensors                          float16, one tensor per expert and projection
                                             (block_sparse_moe.experts.N.w1/w2/w3, or
                                             mlp.experts.N.{gate,up,down}_proj): the layout
                                             published checkpoints have and save_pretrained
                                             writes; checked by reloading it with
                                             from_pretrained (no missing or unexpected keys,
                                             the same logits)
  tokenizer.json, tokenizer_config.json,     copied from the source fixture
  chat_template.jinja
  reference.safetensors                      input_ids_<i>, positions_<i>, logits_<i> (float32,
                                             CPU, eager attention, no KV cache), logits_fp16_<i>,
                                             hidden_states_1, batch_input_ids /
                                             batch_attention_mask / batch_position_ids /
                                             batch_last_logits (4 prompts left-padded),
                                             greedy_prompt_<g>, greedy_ids_<g> (48 pure-greedy
                                             tokens, EOS ignored), rope_inv_freq
  reference.json                             prompts[], greedy[] (with top1_minus_top2 per
                                             step), config_effective, low_precision (fp16 vs
                                             fp32 per prompt), routing (the smallest gap between
                                             the k-th and (k+1)-th router logit over every token
                                             of every reference pass), router_edge_cases (the
                                             family's router run by transformers on chosen
                                             logits: ties, a dominant expert, near ties)

and tests/data/MANIFEST-moe.json (versions, seeds, sizes, sha256 of every file).

The weights are seeded random (normal, std 0.02, as transformers initializes them; biases
std 0.1), rounded to float16 (the reference computes in float32 from exactly the stored
values), with the router
scaled to logits of standard deviation ~2 so that routing decisions are far from ties, random
q/k norms (Qwen3) and shared-expert gate, and the final norm scaled for logits of std ~3. A
model whose reference passes route any token within 1e-3 of a tie between its k-th and
(k+1)-th expert is drawn again with the next seed: an FP32 reimplementation then picks the same
experts as transformers everywhere. The tests that read these files
(tests/transformer/moe_fixture_test.cc, tests/transformer/cuda/moe_forward_test.cc) skip while
they are absent.
"""

import argparse
import hashlib
import json
import math
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5
DTYPE_KWARG = "dtype" if TRANSFORMERS_5 else "torch_dtype"  # what from_config/from_pretrained call it
MARGIN_THRESHOLD = 1e-3  # router logits
TARGET_LOGIT_STD = 3.0
GREEDY_STEPS = 48

MODELS = [
    {
        "name": "tiny-mixtral",
        "source": "tiny-llama",
        "model_type": "mixtral",
        "notes": "8 experts, top-2 renormalized, GQA 4/2, head_dim 16, untied embeddings, tiny-llama's tokenizer",
        "config": {
            "hidden_size": 64,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_local_experts": 8,
            "num_experts_per_tok": 2,
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": False,
        },
        "rope_theta": 1e6,
    },
    {
        "name": "tiny-qwen2-moe",
        "source": "tiny-qwen2",
        "model_type": "qwen2_moe",
        "notes": "8 experts of 48, top-2 not renormalized, a shared expert of 96 with its sigmoid gate, "
        "q/k/v bias, tied embeddings, tiny-qwen2's tokenizer",
        "config": {
            "hidden_size": 64,
            "intermediate_size": 96,
            "moe_intermediate_size": 48,
            "shared_expert_intermediate_size": 96,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "norm_topk_prob": False,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": True,
            "use_sliding_window": False,
        },
        "rope_theta": 1e6,
    },
    {
        "name": "tiny-qwen3-moe",
        "source": "tiny-qwen2",
        "model_type": "qwen3_moe",
        "notes": "8 experts of 48, top-3 renormalized, q/k norms, 3 layers with layer 1 a dense MLP "
        "(mlp_only_layers), untied embeddings, tiny-qwen2's tokenizer",
        "config": {
            "hidden_size": 64,
            "intermediate_size": 96,
            "moe_intermediate_size": 48,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_experts": 8,
            "num_experts_per_tok": 3,
            "norm_topk_prob": True,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [1],
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": False,
            "use_sliding_window": False,
            "attention_bias": False,
        },
        "rope_theta": 1e6,
    },
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# The model (head_dim is hidden_size / num_attention_heads = 16 everywhere: no config field for it)


def make_config(spec, source_config):
    fields = dict(spec["config"])
    fields["vocab_size"] = source_config["vocab_size"]
    fields["bos_token_id"] = source_config.get("bos_token_id")
    fields["eos_token_id"] = source_config.get("eos_token_id")
    fields["hidden_act"] = "silu"
    fields["pad_token_id"] = None
    if TRANSFORMERS_5:
        rope = {"rope_type": "default", "rope_theta": spec["rope_theta"]}
        return transformers.AutoConfig.for_model(spec["model_type"], rope_parameters=rope, **fields)
    return transformers.AutoConfig.for_model(spec["model_type"], rope_theta=spec["rope_theta"], **fields)


def num_experts(config):
    return getattr(config, "num_local_experts", None) or getattr(config, "num_experts")


def decoder_layers(model):
    return model.model.layers


def router_of(layer):
    """The router (gate) module of a MoE decoder layer, or None for a dense one."""
    for name in ("mlp.gate", "block_sparse_moe.gate"):
        module = layer
        for part in name.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if module is not None and hasattr(module, "weight") and module.weight.dim() == 2:
            return module
    return None


def new_model(config, seed):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                                          **{DTYPE_KWARG: torch.float32})
    model = model.float().eval()
    hidden = config.hidden_size
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():  # transformers' initializer, explicitly: N(0, 0.02)
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            elif name.endswith(".bias"):  # not zero, so that a bias left out shows
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        for layer in decoder_layers(model):
            router = router_of(layer)
            if router is not None:  # router logits of std ~2: decisions far from ties
                router.weight.copy_(torch.randn(router.weight.shape, generator=gen) * 2 / math.sqrt(hidden))
            mlp = getattr(layer, "mlp", None)
            if mlp is not None and hasattr(mlp, "shared_expert_gate"):
                w = mlp.shared_expert_gate.weight
                w.copy_(torch.randn(w.shape, generator=gen) / math.sqrt(hidden))
            attn = layer.self_attn
            for norm in ("q_norm", "k_norm"):
                if hasattr(attn, norm):
                    w = getattr(attn, norm).weight
                    w.copy_(0.8 + 0.4 * torch.rand(w.shape, generator=gen))
        for p in model.parameters():  # exactly the float16 values the file will hold
            p.copy_(p.half().float())
    return model


def logits_of(model, ids, **kwargs):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), use_cache=False, **kwargs)
    return out


def scale_final_norm(model, prompts):
    """Scales the final norm so that the logits' std is about TARGET_LOGIT_STD."""
    stds = [logits_of(model, ids).logits[0].std().item() for ids in prompts]
    factor = TARGET_LOGIT_STD / float(np.mean(stds))
    with torch.no_grad():
        w = model.model.norm.weight
        w.copy_((w * factor).half().float())


class RouterWatch:
    """Records, per MoE layer, the smallest gap between the k-th and (k+1)-th router logit of
    every token the model sees while it is attached."""

    def __init__(self, model, top_k):
        self.top_k = top_k
        self.min_margin = math.inf
        self.handles = []
        self.mask = None  # 1 for tokens that count (left padding does not)
        for layer in decoder_layers(model):
            router = router_of(layer)
            if router is not None:
                self.handles.append(router.register_forward_hook(self.hook))

    def hook(self, module, inputs, output):
        x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
        logits = x @ module.weight.double().t()
        if self.mask is not None:
            logits = logits[self.mask.reshape(-1).bool()]
        if logits.shape[1] > self.top_k and logits.shape[0] > 0:
            top = torch.topk(logits, self.top_k + 1, dim=-1).values
            self.min_margin = min(self.min_margin, (top[:, -2] - top[:, -1]).min().item())

    def close(self):
        for h in self.handles:
            h.remove()


# ---------------------------------------------------------------------------------------------
# The checkpoint in the per-expert layout


def to_per_expert(state, model_type, config):
    """transformers 5 holds a layer's experts fused (experts.gate_up_proj [E, 2I, H],
    experts.down_proj [E, H, I]); published checkpoints, and what fp6serve reads, hold one
    tensor per expert and projection. Converts the fused names if there are any."""
    out = {}
    mixtral = model_type == "mixtral"
    for name, t in state.items():
        if name.endswith("mlp.experts.gate_up_proj") or name.endswith("mlp.experts.down_proj"):
            prefix = name[: name.index("mlp.experts.")]
            moe = prefix + ("block_sparse_moe." if mixtral else "mlp.")
            for e in range(t.shape[0]):
                ep = f"{moe}experts.{e}."
                if name.endswith("gate_up_proj"):
                    inter = t.shape[1] // 2
                    out[ep + ("w1.weight" if mixtral else "gate_proj.weight")] = t[e, :inter].contiguous()
                    out[ep + ("w3.weight" if mixtral else "up_proj.weight")] = t[e, inter:].contiguous()
                else:
                    out[ep + ("w2.weight" if mixtral else "down_proj.weight")] = t[e].contiguous()
        elif mixtral and ".mlp.gate." in name:
            out[name.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = t
        else:
            out[name] = t
    return out


def write_checkpoint(model, spec, source_dir, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model.half().save_pretrained(tmp)
        model.float()
        files = sorted(Path(tmp).glob("*.safetensors"))
        state = {}
        for f in files:
            with safe_open(str(f), framework="pt") as sf:
                for k in sf.keys():
                    state[k] = sf.get_tensor(k)
        state = to_per_expert(state, spec["model_type"], model.config)
        if spec["config"].get("tie_word_embeddings"):
            state.pop("lm_head.weight", None)
        save_file({k: v.contiguous() for k, v in sorted(state.items())}, str(out_dir / "model.safetensors"),
                  metadata={"format": "pt"})
        shutil.copy(Path(tmp) / "config.json", out_dir / "config.json")
        if (Path(tmp) / "generation_config.json").exists():
            shutil.copy(Path(tmp) / "generation_config.json", out_dir / "generation_config.json")
    # The source fixture's tokenizer files and decoding defaults, as they are.
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (source_dir / f).exists():
            shutil.copy(source_dir / f, out_dir / f)
    names = sorted(state)
    expert_names = [n for n in names if ".experts.0." in n]
    if not expert_names:
        raise SystemExit(f"{spec['name']}: no per-expert tensor in the checkpoint: {names[:20]}")
    return names


def load_written(out_dir, dtype=torch.float32, attn="eager", device="cpu"):
    kwargs = {"attn_implementation": attn, "output_loading_info": True, DTYPE_KWARG: dtype}
    try:  # the experts one by one, as the modelling code's loop (where transformers has the choice)
        model, info = transformers.AutoModelForCausalLM.from_pretrained(str(out_dir), experts_implementation="eager",
                                                                        **kwargs)
    except (TypeError, ValueError):
        model, info = transformers.AutoModelForCausalLM.from_pretrained(str(out_dir), **kwargs)
    info = info if isinstance(info, dict) else vars(info)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        raise SystemExit(f"{out_dir}: transformers does not read the written checkpoint cleanly: {bad}")
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------
# The reference


def source_reference(source_dir):
    ref = json.loads((source_dir / "reference.json").read_text())
    arrays = {}
    with safe_open(str(source_dir / "reference.safetensors"), framework="pt") as sf:
        for k in sf.keys():
            arrays[k] = sf.get_tensor(k)
    return ref, arrays


def greedy(model, prompt):
    ids, new, margins, top1 = list(prompt), [], [], []
    for _ in range(GREEDY_STEPS):
        last = logits_of(model, ids).logits[0, -1]
        top = torch.topk(last, 2)
        margins.append(float(top.values[0] - top.values[1]))
        top1.append(float(top.values[0]))
        new.append(int(top.indices[0]))
        ids.append(new[-1])
    return new, margins, top1


def router_edge_cases(model, config):
    """The family's router, as transformers runs it, on chosen logits: each token t is the unit
    vector e_t against a router whose column t holds token t's logits."""
    experts, k = num_experts(config), config.num_experts_per_tok
    layer = next(l for l in decoder_layers(model) if router_of(l) is not None)
    router = router_of(layer)
    rng = np.random.default_rng(5)
    cases = [
        ("ties_all_equal", [[0.0] * experts, [1.5] * experts]),
        ("ties_at_the_top", [[1.0, 3.0, 3.0, 0.5, 3.0] + [0.0] * (experts - 5)]),
        ("distinct", rng.normal(size=(3, experts)).round(3).tolist()),
        ("one_dominant", [[0.0] * (experts - 1) + [8.0], [8.0] + [-1.0] * (experts - 1)]),
        ("near_tie", [[2.0, 2.001, 1.999] + [0.0] * (experts - 3)]),
    ]
    out = []
    for name, logits in cases:
        n, hidden = len(logits), config.hidden_size
        x = torch.zeros(n, hidden)
        for t in range(n):
            x[t, t] = 1.0
        w = torch.zeros(experts, hidden)
        for t in range(n):
            w[:, t] = torch.tensor(logits[t], dtype=torch.float32)
        saved = router.weight.detach().clone()
        with torch.no_grad():
            router.weight.copy_(w)
            result = router(x)
            router.weight.copy_(saved)
        if isinstance(result, tuple) and len(result) == 3:  # transformers 5: (logits, scores, indices)
            scores, indices = result[1], result[2]
            if scores.shape[-1] == experts and k != experts:
                scores = scores.gather(-1, indices)
            computed_by = type(router).__name__ + ".forward"
        else:  # transformers 4: the router is a Linear; the block's own arithmetic
            probs = torch.softmax(result.float(), dim=-1)
            scores, indices = torch.topk(probs, k, dim=-1)
            renorm = config.model_type == "mixtral" or getattr(config, "norm_topk_prob", False)
            if renorm:
                scores = scores / scores.sum(dim=-1, keepdim=True)
            computed_by = "softmax, topk and the family's renormalization in torch (transformers 4 router)"
        probs = torch.softmax(torch.tensor(logits, dtype=torch.float32), dim=-1)
        sorted_p = torch.sort(probs, dim=-1, descending=True).values
        ties = bool((sorted_p[:, k - 1] == sorted_p[:, k]).any()) if k < experts else False
        out.append({
            "name": name,
            "logits": logits,
            "top_k": k,
            "renormalize": config.model_type == "mixtral" or bool(getattr(config, "norm_topk_prob", False)),
            "ties": ties,
            "torch_ids": indices.tolist(),
            "torch_weights": scores.float().tolist(),
            "computed_by": computed_by,
        })
    return out


def stats(a, b):
    d = (a.float() - b.float()).abs()
    return {
        "max_abs": d.max().item(),
        "mean_abs": d.mean().item(),
        "argmax_agreement": (a.argmax(-1) == b.argmax(-1)).float().mean().item(),
    }


def make_reference(model, spec, source_dir, out_dir, watch):
    src_ref, src = source_reference(source_dir)
    config = model.config
    arrays, prompts = {}, []
    for p in src_ref["prompts"]:
        i = p["index"]
        ids = src[f"input_ids_{i}"].tolist()
        positions = src[f"positions_{i}"]
        logits = logits_of(model, ids).logits[0]
        arrays[f"input_ids_{i}"] = torch.tensor(ids, dtype=torch.int64)
        arrays[f"positions_{i}"] = positions.to(torch.int64)
        arrays[f"logits_{i}"] = logits[positions].float().contiguous()
        prompts.append({"index": i, "length": len(ids), "kind": p["kind"], "ids": ids,
                        "stored_positions": positions.tolist(), "logit_std": logits.std().item()})
    out = logits_of(model, arrays["input_ids_1"].tolist(), output_hidden_states=True)
    arrays["hidden_states_1"] = torch.stack([h[0] for h in out.hidden_states]).float().contiguous()
    # Four prompts left-padded into one batch, positions counted from each prompt's start.
    seqs = [arrays[f"input_ids_{i}"].tolist() for i in range(4)]
    width = max(len(s) for s in seqs)
    pad = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else (config.eos_token_id or 0)
    batch_ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    watch.mask = mask
    with torch.no_grad():
        batch_logits = model(input_ids=batch_ids, attention_mask=mask, position_ids=position_ids,
                             use_cache=False).logits
    watch.mask = None
    arrays["batch_input_ids"], arrays["batch_attention_mask"] = batch_ids, mask
    arrays["batch_position_ids"] = position_ids
    arrays["batch_last_logits"] = batch_logits[:, -1].float().contiguous()
    unbatched = torch.stack([arrays[f"logits_{i}"][-1] for i in range(4)])
    greedy_out = []
    for g in src_ref["greedy"]:
        gi = g["index"]
        prompt = src[f"greedy_prompt_{gi}"].tolist()
        new, margins, top1 = greedy(model, prompt)
        arrays[f"greedy_prompt_{gi}"] = torch.tensor(prompt, dtype=torch.int64)
        arrays[f"greedy_ids_{gi}"] = torch.tensor(new, dtype=torch.int64)
        greedy_out.append({"index": gi, "name": g["name"], "prompt_ids": prompt, "max_new_tokens": GREEDY_STEPS,
                           "eos_stops": False, "new_ids": new, "top1_minus_top2": margins, "top1_logit": top1,
                           "min_margin": min(margins)})
    if hasattr(model.model, "rotary_emb"):
        arrays["rope_inv_freq"] = model.model.rotary_emb.inv_freq.float().contiguous()
    return arrays, prompts, greedy_out, stats(batch_logits[:, -1], unbatched)


def low_precision(out_dir, prompts, arrays):
    cuda = torch.cuda.is_available()
    device, attn = ("cuda", "sdpa") if cuda else ("cpu", "eager")
    model = load_written(out_dir, dtype=torch.float16, attn=attn, device=device)
    vs = []
    for p in prompts:
        i = p["index"]
        with torch.no_grad():
            l16 = model(input_ids=torch.tensor([p["ids"]], device=device), use_cache=False).logits[0].cpu()
        l16 = l16[arrays[f"positions_{i}"]]
        arrays[f"logits_fp16_{i}"] = l16.half().contiguous()
        vs.append(stats(l16, arrays[f"logits_{i}"]))
    return {"fp16": {"device": device, "attn_implementation": attn, "vs_fp32": vs}}


def effective(config):
    keys = ["model_type", "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
            "shared_expert_intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "num_local_experts", "num_experts", "num_experts_per_tok", "norm_topk_prob",
            "decoder_sparse_step", "mlp_only_layers", "rms_norm_eps", "tie_word_embeddings", "sliding_window",
            "bos_token_id", "eos_token_id"]
    out = {k: getattr(config, k, None) for k in keys}
    out["rope"] = getattr(config, "rope_parameters", None) or {"rope_theta": getattr(config, "rope_theta", None)}
    return json.loads(json.dumps(out, default=str))


# ---------------------------------------------------------------------------------------------


def make_one(spec, out_root, seed):
    t0 = time.time()
    source_dir = REPO / "tests" / "data" / spec["source"]
    source_config = json.loads((source_dir / "config.json").read_text())
    src_ref, src = source_reference(source_dir)
    config = make_config(spec, source_config)
    prompts = [src[f"input_ids_{p['index']}"].tolist() for p in src_ref["prompts"]]
    out_dir = out_root / spec["name"]
    for attempt in range(50):  # a model whose routing comes near a tie is drawn again
        model_seed = seed + 1000 * attempt
        model = new_model(config, model_seed)
        scale_final_norm(model, prompts)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        names = write_checkpoint(model, spec, source_dir, out_dir)
        ref_model = load_written(out_dir)
        worst = 0.0
        for ids in prompts:  # what transformers reads back computes what was built
            built = logits_of(model, ids).logits
            d = (logits_of(ref_model, ids).logits - built).abs().max().item()
            worst = max(worst, d / max(1.0, built.abs().max().item()))
        if worst > 1e-3:  # more than FP32 arithmetic-order noise: a wrong tensor, or a router near a
            # tie that the two expert implementations (fused, one by one) break differently. A
            # wrong tensor fails for every seed (the loop's end says so); a tie only for this one.
            log(f"{spec['name']}: seed {model_seed}: the reloaded checkpoint differs from the built model "
                f"by {worst:.3g} (relative): drawing again")
            continue
        watch = RouterWatch(ref_model, ref_model.config.num_experts_per_tok)
        arrays, prompt_info, greedy_info, batch_stats = make_reference(ref_model, spec, source_dir, out_dir, watch)
        watch.close()
        log(f"{spec['name']}: seed {model_seed}: smallest router margin {watch.min_margin:.3g}")
        if watch.min_margin >= MARGIN_THRESHOLD:
            break
    else:
        raise SystemExit(f"{spec['name']}: no seed kept the router {MARGIN_THRESHOLD} away from ties "
                         "and read back the same logits")
    lp = low_precision(out_dir, prompt_info, arrays)
    save_file({k: v.contiguous() for k, v in sorted(arrays.items())}, str(out_dir / "reference.safetensors"),
              metadata={"format": "pt"})
    cfg = ref_model.config
    reference = {
        "model": spec["name"],
        "architecture": type(ref_model).__name__,
        "notes": spec["notes"],
        "source_fixture": spec["source"],
        "seed": model_seed,
        "config_effective": effective(cfg),
        "prompts": prompt_info,
        "greedy": greedy_info,
        "batch": {"prompt_indices": [0, 1, 2, 3], "padding": "left",
                  "position_ids": "attention_mask.cumsum(-1) - 1, clamped at 0 (passed explicitly)",
                  "vs_unbatched": batch_stats},
        "low_precision": lp,
        "routing": {"min_margin_router_logits": watch.min_margin, "threshold": MARGIN_THRESHOLD,
                    "over": "every token of the prompts, the batch (padding excluded) and the greedy steps, "
                            "every MoE layer"},
        "router_edge_cases": router_edge_cases(ref_model, cfg),
        "fp32_reference_device": "cpu",
        "array_index": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                        for k, v in sorted(arrays.items())},
    }
    (out_dir / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    files = {f.name: {"bytes": f.stat().st_size, "sha256": sha256(f)} for f in sorted(out_dir.iterdir())}
    return {
        "name": spec["name"],
        "architecture": reference["architecture"],
        "notes": spec["notes"],
        "seed": model_seed,
        "status": "ok",
        "config_summary": reference["config_effective"],
        "tensors": names,
        "min_router_margin": watch.min_margin,
        "logit_std_fp32": float(np.mean([p["logit_std"] for p in prompt_info])),
        "greedy_min_margin": [g["min_margin"] for g in greedy_info],
        "fp16_max_abs_diff": [v["max_abs"] for v in lp["fp16"]["vs_fp32"]],
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files.values()),
        "seconds": round(time.time() - t0, 2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "tests" / "data"), help="the fixtures' directory")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--only", action="append", help="make only this fixture (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(8, torch.get_num_threads())))
    torch.use_deterministic_algorithms(False)
    out_root = Path(args.out)
    t0 = time.time()
    models = []
    for spec in MODELS:
        if args.only and spec["name"] not in args.only:
            continue
        log(f"making {spec['name']} ({spec['model_type']})")
        models.append(make_one(spec, out_root, args.seed))
    manifest = {
        "generated_by": "tools/make_moe_fixtures.py",
        "generated_at_unix": int(time.time()),
        "seed": args.seed,
        "versions": {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__},
        "device": {"cuda_available": torch.cuda.is_available(),
                   "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "models": models,
        "elapsed_s": round(time.time() - t0, 1),
    }
    path = out_root / "MANIFEST-moe.json"
    if args.only and path.exists():  # keep the other fixtures' entries
        old = json.loads(path.read_text())
        kept = [m for m in old.get("models", []) if m["name"] not in args.only]
        manifest["models"] = kept + models
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    for m in models:
        log(f"{m['name']}: {m['total_bytes']} bytes, router margin {m['min_router_margin']:.3g}, "
            f"fp16 max|dlogit| {max(m['fp16_max_abs_diff']):.4f}, {m['seconds']} s")
    log(f"wrote {path} ({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
