"""Encoding cost: the plugin's collect step and large messages, next to the old path and proton.

    .venv/bin/python bench/encode.py [--quick]

Prints, in µs per message (best of 7 rounds):
1. A typical message, the first BuildStateChange the recorded hub fired for host.completeBuild,
   through the plugin's collect (format + convert + encode + bookkeeping), and through koji's
   run_callbacks with the plugin registered; next to the old path: koji's @convert_datetime copy,
   then format_event with values.to_amqp, then the old encoder (both from commit OLD, read with
   `git show`, so the comparison stays runnable).
2. Large messages: 5 MB in 50,000 values (proton can hold those), 100,000 values (proton cannot);
   the one-pass encoder next to proton's Message.encode().
No broker or database is needed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import koji.plugin  # noqa: E402
import koji.util  # noqa: E402
from koji.context import context  # noqa: E402

from devkit.recorded import entries  # noqa: E402
from koji_messagebus import plugin as mb_plugin  # noqa: E402
from koji_messagebus.config.settings import load_config  # noqa: E402
from koji_messagebus.format import wire  # noqa: E402
from koji_messagebus.format.messages import CALLBACK_TYPES, format_event  # noqa: E402
from koji_messagebus.runtime import RequestBatch, Runtime  # noqa: E402
from koji_messagebus.testing import load_plugin, unload_plugin  # noqa: E402

OLD = "c27e986"  # the tree before the one-pass encoder
OLD_FILES = ("values.py", "amqp_codec.py", "messages.py", "wire.py")


def per_call_us(fn: Callable[[], Any], loops: int, repeats: int = 7) -> float:
    """Best over `repeats` of the mean time of one call, in µs (the least disturbed round)."""
    results = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        results.append((time.perf_counter() - t0) / loops * 1e6)
    return min(results)


def old_package(tmp: Path) -> Any:
    """The old values/amqp_codec/messages/wire modules, as package `kmb_old`."""
    pkg = tmp / "kmb_old"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in OLD_FILES:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD}:koji_messagebus/{name}"], check=True,
                              capture_output=True, text=True).stdout
        (pkg / name).write_text(text)
    sys.path.insert(0, str(tmp))
    return importlib.import_module("kmb_old.wire"), importlib.import_module("kmb_old.messages")


def typical() -> tuple[str, dict]:
    found = sorted((e["seq"], cb, e["kwargs"]) for cb in CALLBACK_TYPES for e in entries(cb)
                   if e["api_call"] == "host.completeBuild")
    _, cbtype, kwargs = found[0]
    return cbtype, kwargs


def bench_typical(tmp: Path, loops: int) -> None:
    old_wire, old_messages = old_package(tmp)
    cbtype, kwargs = typical()
    msg_type = CALLBACK_TYPES[cbtype]
    conf = tmp / "messagebus.conf"
    conf.write_text("[broker]\ntest_mode = true\nusername = u\npassword = p\n")
    runtime = Runtime(config=load_config(str(conf)))
    batch = RequestBatch()

    def collect() -> None:
        runtime.collect(batch, msg_type, kwargs)
        if len(batch.messages) > 1000:
            batch.messages.clear()

    def old_collect() -> None:
        converted = koji.util.encode_datetime_recurse(kwargs)
        old_wire.encode(old_messages.format_event(msg_type, converted, "koji.event"))

    os.environ["KOJI_MESSAGEBUS_CONFIG"] = str(conf)  # the hub's load reads the config too
    _, registered = load_plugin()
    mb_plugin.reset(runtime)
    context._threadclear()

    def callbacks() -> None:
        koji.plugin.run_callbacks(cbtype, **kwargs)
        if len(context.messagebus_batch.messages) > 1000:
            context.messagebus_batch.messages.clear()

    new_event = format_event(msg_type, kwargs, "koji.event", convert=False)
    converted = koji.util.encode_datetime_recurse(kwargs)
    old_event = old_messages.format_event(msg_type, converted, "koji.event")
    same = (wire.encode(new_event, msg_id="x", created=1.0).payload
            == old_wire.encode(old_event, msg_id="x", created=1.0).payload)
    rows = [
        ("format (routing key, headers)", per_call_us(lambda: format_event(msg_type, kwargs, "koji.event",
                                                                            convert=False), loops),
         per_call_us(lambda: old_messages.format_event(msg_type, converted, "koji.event"), loops)),
        ("convert + encode (one pass) / encode (old)", per_call_us(lambda: wire.encode(new_event), loops),
         per_call_us(lambda: old_wire.encode(old_event), loops)),
        ("koji's @convert_datetime copy", 0.0, per_call_us(lambda: koji.util.encode_datetime_recurse(kwargs), loops)),
        ("collect, all included (copy + format + convert + encode + bookkeeping)", per_call_us(collect, loops),
         per_call_us(old_collect, loops)),
        ("koji.plugin.run_callbacks with the plugin registered", per_call_us(callbacks, loops), float("nan")),
    ]
    context._threadclear()
    unload_plugin(registered)
    print(f"Load average before: {os.getloadavg()[0]:.2f} (other work on the machine inflates every figure)")
    print()
    print(f"## 1. A typical message: {msg_type} {new_event.routing_key} ({len(kwargs['info'])}-key build map), "
          f"{len(wire.encode(new_event).payload)} bytes; same bytes as the old path: {same}")
    print()
    print("| step | one pass (µs) | old path (µs) |")
    print("|---|---:|---:|")
    for name, new, old in rows:
        print(f"| {name} | {new:.1f} | {old:.1f} |")
    print()


def bench_large(quick: bool) -> None:
    print("## 2. Large messages")
    print()
    print("| message | bytes | one pass (ms) | proton Message.encode (ms) |")
    print("|---|---:|---:|---:|")
    cases = {
        "5 MB in 50,000 values (100-char strings)": {"outputs": [f"{i:08d}" + "x" * 92 for i in range(50_000)]},
        "5 MB in 50,001 values (16,667 outputs: [300-char name, size])":
            {"outputs": [[f"{i:08d}" + "x" * 292, i * 1000] for i in range(16_667)]},
        "150,000 values (50,000 maps of an int and a short string)":
            {"files": [{"id": i, "name": f"f{i}"} for i in range(50_000)]},
    }
    repeats = 1 if quick else 5
    for name, body in cases.items():
        event = format_event("Import", {"type": "cg", **body}, "koji.event", convert=False)
        payload = wire.encode(event).payload
        ours = min(timed(lambda e=event: wire.encode(e)) for _ in range(repeats))
        try:
            proton = min(timed(lambda e=event: wire.encode_with_proton("x", 1.0, e.routing_key, None, e.headers,
                                                                       e.body)) for _ in range(repeats))
            shown = f"{proton * 1e3:.1f}"
        except Exception as exc:  # noqa: BLE001 - proton's DataException [-10]
            shown = f"fails: {type(exc).__name__} {exc}"
        print(f"| {name} | {len(payload):,} | {ours * 1e3:.1f} | {shown} |")
    print()


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke test of the script")
    args = parser.parse_args()
    logging.getLogger("koji.plugin.messagebus").setLevel(logging.ERROR)  # the test config's PLAIN warning
    with tempfile.TemporaryDirectory() as tmp:
        bench_typical(Path(tmp), 200 if args.quick else 5000)
    bench_large(args.quick)


if __name__ == "__main__":
    main()
