"""Where one decode step's time goes: torch.profiler over a few batch-1 steps, grouped by what runs.

`lab bench decode --profile` calls `profile_decode` (this is a helper of that benchmark, not a
benchmark kind). Each op's self time goes to the innermost model part it ran in, found by marking
every module's forward as a profiler range for the profiled steps only:
- "matmul / quantized linear": the linear layers (float, packed, int8, int4), their kernels and casts
- "attention": RoPE, the KV cache writes, scores, softmax and the weighted sum (its linears excluded)
- "norms / elementwise": RMSNorm, the feed-forward's SiLU and product, the residual adds
- "other": the embedding, the step's own Python, picking the next token
A range's own self time (Python between its ops) counts for its part too, and is also given on its
own (`python_ms_per_token`), so the parts add up to the profiled step. The profiler and its marks
slow small ops, so `step_ms` (the same steps without them) is given beside `profiled_step_ms`.
A compiled step (llama_core.compiled) runs no module hooks inside its graph: only its ops are listed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import nullcontext

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile, record_function

from llama_core.compiled import is_compiled
from llama_core.devices import synchronize
from llama_core.generate import decode_one_token, prefill
from llama_core.model import Attention, FeedForward, RMSNorm, TransformerBlock

GROUPS = ("matmul / quantized linear", "attention", "norms / elementwise", "other")
_PREFIX = "lab.part:"
_STEP = "lab.decode_step"


def part_of(module: nn.Module) -> str:
    """The group a module's own work belongs to (its children's work goes to theirs)."""
    if hasattr(module, "in_features"):  # nn.Linear, the packed and the quantized linears
        return GROUPS[0]
    if isinstance(module, Attention):
        return GROUPS[1]
    if isinstance(module, (RMSNorm, FeedForward, TransformerBlock)):
        return GROUPS[2]
    return GROUPS[3]


def profile_decode(model: nn.Module, prompt: list[int], steps: int, device: torch.device,
                   top: int = 8) -> dict:
    """Profile `steps` greedy decode steps of `model` after `prompt` (after an unprofiled warm-up
    and an unprofiled timing of the same steps): per-group and top-op time per token and share."""
    if steps < 1:
        raise ValueError(f"profile at least one decode step, not {steps}")
    if len(prompt) + steps > model.config.max_seq_len:
        raise ValueError(f"a {len(prompt)}-token prompt and {steps} steps exceed the model's "
                         f"{model.config.max_seq_len}-token context: profile fewer steps")
    _run_steps(model, prompt, steps, device)  # warm-up: allocations, kernel packing, first dispatch
    step_s = _run_steps(model, prompt, steps, device) / steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    handles = _mark_modules(model)
    try:
        with profile(activities=activities) as prof:
            _run_steps(model, prompt, steps, device, mark=True)
    finally:
        for handle in handles:
            handle.remove()
    # a compiled step runs no module hooks inside its graph: its ops fall outside every part
    return {**summarize(prof.events(), steps, step_s, device.type == "cuda", top), "compiled": is_compiled(model)}


def _run_steps(model, prompt: list[int], steps: int, device: torch.device, mark: bool = False) -> float:
    """Seconds for `steps` greedy decode steps after the prompt's prefill (the prefill not timed)."""
    model.setup_caches(1, len(prompt) + steps)
    try:
        with torch.inference_mode():
            logits = prefill(model, torch.tensor([prompt], device=device))
            synchronize(device)
            start = time.perf_counter()
            for i in range(steps):
                with record_function(_STEP) if mark else nullcontext():
                    logits = decode_one_token(model, logits.argmax(-1, keepdim=True), len(prompt) + i)
                    synchronize(device)
            return time.perf_counter() - start
    finally:
        model.clear_caches()


def _mark_modules(model: nn.Module) -> list:
    """Forward hooks that open a profiler range named after each module's group, and close it."""
    handles = []
    for module in model.modules():
        ranges: list[record_function] = []

        def enter(mod, args, ranges=ranges, name=_PREFIX + part_of(module)):
            ranges.append(record_function(name).__enter__())

        def leave(mod, args, output, ranges=ranges):
            ranges.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def summarize(events, steps: int, step_s: float, cuda: bool = False, top: int = 8) -> dict:
    """The profile record from the profiler's events: each event's self time (CPU; on CUDA also the
    device's) to the group of its innermost marked range, inside the marked steps only."""
    cpu_us, device_us, python_us = defaultdict(float), defaultdict(float), defaultdict(float)
    op_us, op_calls, op_group = defaultdict(float), defaultdict(int), {}
    for event in events:
        group = _group_of(event)
        if group is None:  # outside the decode steps (the profiler's own start and stop)
            continue
        cpu_us[group] += event.self_cpu_time_total
        device_us[group] += event.self_device_time_total if cuda else 0.0
        if event.name.startswith((_PREFIX, _STEP)):  # a range's own time: Python between its ops
            python_us[group] += event.self_cpu_time_total
        else:
            op_us[event.name] += event.self_cpu_time_total
            op_calls[event.name] += 1
            op_group.setdefault(event.name, group)
    total_us = sum(cpu_us.values()) or 1.0
    per_token = 1e-3 / steps  # us over all steps -> ms per step

    def row(name: str, us: float) -> dict:
        return {"name": name, "ms_per_token": round(us * per_token, 4), "share": round(100 * us / total_us, 2)}

    groups = []
    for g in GROUPS:
        entry = {**row(g, cpu_us.get(g, 0.0)), "python_ms_per_token": round(python_us.get(g, 0.0) * per_token, 4)}
        if cuda:
            entry["device_ms_per_token"] = round(device_us.get(g, 0.0) * per_token, 4)
        groups.append(entry)
    ops = sorted(op_us, key=op_us.get, reverse=True)[:top]
    return {"steps": steps, "step_ms": round(step_s * 1e3, 4), "profiled_step_ms": round(total_us * per_token, 4),
            "time": "self CPU time" + (" (device time beside it)" if cuda else ""), "groups": groups,
            "top_ops": [{**row(op, op_us[op]), "group": op_group[op], "calls_per_token": op_calls[op] / steps}
                        for op in ops]}


def _group_of(event) -> str | None:
    """The group of the innermost marked range around `event` (itself included); None outside a step."""
    node, group = event, None
    while node is not None:
        if group is None and node.name.startswith(_PREFIX):
            group = node.name.removeprefix(_PREFIX)
        if node.name == _STEP:
            return group or GROUPS[3]
        node = node.cpu_parent
    return None


def format_profile(profile: dict, title: str) -> str:
    """A compact text table of a `profile_decode` record."""
    lines = [f"{title}: one decode step {profile['step_ms']:.2f} ms ({profile['profiled_step_ms']:.2f} ms "
             f"profiled, {profile['steps']} steps, {profile['time']})",
             f"  {'part':<34}{'ms/token':>10}{'share':>9}  of which Python between ops (ms)"]
    compiled = profile.get("compiled", False)
    if compiled:  # no module hooks run inside a compiled graph: no parts, only ops
        lines[-1] = "  compiled: the parts are not separated inside the graph; its ops:"
    else:
        lines += [f"  {g['name']:<34}{g['ms_per_token']:>10.3f}{g['share']:>8.1f}%  "
                  f"{g['python_ms_per_token']:>10.3f}" for g in profile["groups"]]
    lines.append(f"  {'top ops':<34}{'ms/token':>10}{'share':>9}  calls/token" + ("" if compiled else "  part"))
    lines += [f"  {o['name'][:34]:<34}{o['ms_per_token']:>10.3f}{o['share']:>8.1f}%  {o['calls_per_token']:>11.1f}"
              + ("" if compiled else f"  {o['group']}") for o in profile["top_ops"]]
    return "\n".join(lines)
