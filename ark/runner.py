"""Run one node in this process: ``python -m ark.runner MODULE:FACTORY --name NAME [--params JSON]``.

This is what a launch file starts for each of its nodes, and it works by hand too:

    python -m ark.runner ark.demo_nodes:CameraNode --name camera --params '{"rate": 10}'

``FACTORY`` is a :class:`~ark.node.Node` subclass or any callable accepting
``name=..., params=...`` that returns a Node. The node finds its graph through the usual
configuration (``ARK_CONFIG``, ``ARK_REGISTRY``, ``ARK_IPC_DIR``). The process spins the
node until SIGINT or SIGTERM and then exits 0 after leaving the graph. Mistakes a user can
make (a module that does not import, a missing factory, parameters that are not a JSON
object, an invalid configuration) print one line ``error: ...`` on stderr and exit 2.
A node that raises ``SystemExit(n)`` from a callback exits with status ``n``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import signal
import sys
from typing import Any, Callable, NoReturn, Sequence

from ark.errors import ArkError

EXIT_USAGE = 2


class UsageError(ArkError):
    """A mistake in the runner's command line (module path, factory, parameters)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit 2, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (usage: python -m ark.runner MODULE:FACTORY --name NAME "
                              f"[--params JSON])\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m ark.runner", description="Run one Ark node until SIGINT/SIGTERM.")
    p.add_argument("target", metavar="MODULE:FACTORY",
                   help="a Node subclass, or a callable(name=..., params=...) returning a Node")
    p.add_argument("--name", required=True, help="the node's name in the graph")
    p.add_argument("--params", default="{}", metavar="JSON", help="node parameters as a JSON object")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="level of Ark's log messages on stderr (default: warning)")
    return p


def resolve_factory(target: str) -> Callable[..., Any]:
    """Import ``module:attr`` (``attr`` may be dotted) and return the attribute; UsageError if it fails."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:FACTORY (for example ark.demo_nodes:CameraNode), got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise UsageError(f"cannot import {module_name!r}: no module named {exc.name!r}") from None
        raise UsageError(f"importing {module_name!r} failed: {exc}") from None
    except ImportError as exc:
        raise UsageError(f"importing {module_name!r} failed: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise UsageError(f"{target} is a {type(obj).__name__}, not a Node class or factory")
    return obj


def parse_params(text: str) -> dict[str, Any]:
    """Decode ``--params``: a JSON object, else UsageError."""
    from ark.cli import json_object

    return json_object(text, "--params", UsageError) or {}


def build_node(target: str, name: str, params: dict[str, Any]) -> Any:
    """Resolve ``target`` and call it with ``name`` and ``params``; the result must be a Node."""
    from ark.node import Node

    factory = resolve_factory(target)
    try:
        inspect.signature(factory).bind(name=name, params=params)
    except TypeError as exc:
        raise UsageError(f"{target} cannot be called with name= and params= ({exc})") from None
    except ValueError:
        pass  # no introspectable signature (some builtins): just try the call
    node = factory(name=name, params=params)
    if not isinstance(node, Node):
        raise UsageError(f"{target} returned a {type(node).__name__}, not a Node")
    return node


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status (0 after SIGINT/SIGTERM, 2 on user errors)."""
    # Until the node's executor installs its own handlers, SIGTERM means the same as Ctrl-C:
    # a launcher stopping us while we still import or build the node gets a clean exit too.
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=f"%(levelname)s {args.name} %(name)s: %(message)s")
    node = None
    try:
        node = build_node(args.target, args.name, parse_params(args.params))
        node.spin()
    except KeyboardInterrupt:
        pass  # SIGINT/SIGTERM before the executor took over signal handling: a normal stop
    except ArkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if node is not None:
            # Leaving the graph takes a moment and is bounded; a second signal must not
            # interrupt it halfway (a launcher escalates to SIGKILL if it takes too long).
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
            node.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
