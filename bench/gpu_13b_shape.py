"""GPU probe for docs/scaling.md: forward, capture and eval rates of a Llama-2-13B-shaped model.

Needs only torch and transformers on a CUDA machine (no weights: a random-init model of the
same shape costs the same FLOPs). Times, per batch shape, the backbone's forward alone, with a
pooling hook (mean, max, last) on every `down_proj` input (the `ffn.act` site) copied to the
host once per batch, with a per-token copy to the host per layer, and a 2-token greedy step
(prefill + one decode with the KV cache). Mean of 10 runs after one warm-up.

    python bench/gpu_13b_shape.py
"""

from __future__ import annotations

import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def timed(fn, n: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def _model() -> LlamaForCausalLM:
    """A random-weight Llama of Llama-2-13B's shape, bfloat16, on the GPU."""
    torch.set_default_device("cuda")
    torch.set_default_dtype(torch.bfloat16)
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=40,
        vocab_size=32000,
    )
    return LlamaForCausalLM(config).eval()


def _capture_rates(model: LlamaForCausalLM, ids: torch.Tensor) -> dict[str, float]:
    """Seconds per forward: bare, with pooling hooks, with per-token copies to the host."""
    out: list[torch.Tensor] = []

    def pool(module, args) -> None:
        x = args[0].float()
        out.append(torch.stack([x.mean(1), x.amax(1), x[:, -1]], 1).half())

    def per_token(module, args) -> None:
        out.append(args[0].half().to("cpu"))

    rates = {"bare": timed(lambda: model.model(input_ids=ids))}
    for name, hook in (("pooled", pool), ("per-token", per_token)):

        def run(name=name) -> None:
            out.clear()
            model.model(input_ids=ids)
            if name == "pooled":
                torch.stack(out).cpu()

        handles = [layer.mlp.down_proj.register_forward_pre_hook(hook)
                   for layer in model.model.layers]  # fmt: skip
        try:
            rates[name] = timed(run)
        finally:
            for h in handles:
                h.remove()
    return rates


def _greedy_seconds(model: LlamaForCausalLM, ids: torch.Tensor) -> float:
    """Seconds for a 2-token greedy answer: prefill with the last logits only, one step."""

    def greedy() -> None:
        o = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        nxt = o.logits[:, -1].argmax(-1)
        model(
            input_ids=nxt[:, None],
            past_key_values=o.past_key_values,
            use_cache=True,
            logits_to_keep=1,
        )

    return timed(greedy)


def main() -> None:
    model = _model()
    n_params = sum(p.numel() for p in model.parameters()) / 1e9
    gib = torch.cuda.max_memory_allocated() / 2**30
    print(f"{torch.cuda.get_device_name()}: {n_params:.2f} B parameters, {gib:.1f} GiB")
    for batch, length in ((32, 12), (128, 12), (64, 24)):
        ids = torch.randint(0, model.config.vocab_size, (batch, length))
        with torch.inference_mode():
            rates = _capture_rates(model, ids)
            gen = _greedy_seconds(model, ids)
        tokens = batch * length
        print(
            f"batch {batch} x {length} tokens: "
            + "  ".join(f"{k} {tokens / v:,.0f} tok/s" for k, v in rates.items())
            + f"  eval 2-token greedy {batch / gen:,.0f} prompts/s"
        )


if __name__ == "__main__":
    main()
