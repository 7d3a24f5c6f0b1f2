"""python -m bench [--quick] [--clients ...] [--sizes ...] [--in-flight ...] [--json FILE]

Serves realistic 1K and 4K answers from the relay double (its own process) and measures each
client in a fresh process per cell: CPU per answer, the event loop's worst and p99 stall, and
peak RSS, at 1/4/8/16 answers in flight; then the cost of fitting a 4K picture under 10 MiB.

``python -m bench bot`` measures the whole bot process instead (see bench/bot.py);
``python -m bench cluster``, a gateway and 1 or 2 workers on PostgreSQL (bench/cluster.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from .payloads import SIZES, Payload, payload

ROOT = Path(__file__).resolve().parent.parent
CLIENT_LABELS = {
    "ours": "this project (RelayClient.generate)",
    "streamed": "this project, live previews (streamed with thoughts)",
    "decoder": "this project (StreamDecoder only)",
    "sdk": "google-genai (aiohttp, its default here)",
    "sdk-httpx": "google-genai (httpx transport)",
    "naive": "httpx + json.loads + b64decode",
}
LIMIT = 10 * 2**20

GOAL_STALL_MS = 20.0
GOAL_CPU_S = 0.25
GOAL_CPU_RATIO = 0.3
GOAL_RSS_RATIO = 0.5
GOAL_FIT_S = 0.150


def answers_for(size: str, in_flight: int, quick: bool) -> int:
    """Enough answers for stable figures, few enough to keep a full run at a few minutes."""
    if quick:
        rounds = 1 if size == "4K" else 3
    elif size == "4K":
        rounds = {1: 5, 4: 3}.get(in_flight, 2)
    else:
        rounds = {1: 20, 4: 10, 8: 5}.get(in_flight, 3)
    return in_flight * rounds


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(ROOT) + (os.pathsep + out["PYTHONPATH"] if out.get("PYTHONPATH") else "")
    return out


def start_double(payloads: list[Payload]) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "bench.serve"]
    for p in payloads:
        cmd += ["--picture", f"{p.width}x{p.height}={p.path}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"the relay double did not start (said {line!r})")
    return proc, line.split()[1]


def stop_double(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def set_default(url: str, p: Payload) -> None:
    behaviour = {"kind": "image", "huge": True, "width": p.width, "height": p.height}
    req = urllib.request.Request(f"{url}/__double/default", data=json.dumps(behaviour).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as answer:
        answer.read()


def run_worker(args: list[str], timeout: float = 900) -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bench.worker", *args], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"error": tail[0], "elapsed": time.monotonic() - started}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["elapsed"] = time.monotonic() - started
    return result


def fmt_ms(v: float) -> str:
    return f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| answer | in flight | client | CPU / answer | worst stall | p99 stall | worst busy | peak RSS | wall / answer |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        label = CLIENT_LABELS.get(r["client"], r["client"])
        if "error" in r:
            lines.append(f"| {r['size']} | {r['in_flight']} | {label} | failed: {r['error']} | | | | | |")
            continue
        lines.append(
            f"| {r['size']} | {r['in_flight']} | {label} | {r['cpu_per_answer_s']:.3f} s | {fmt_ms(r['worst_stall_ms'])}"
            f" | {fmt_ms(r['p99_stall_ms'])} | {fmt_ms(r['worst_busy_ms'])} | {r['peak_rss_mb']:.0f} MB | {r['wall_per_answer_s']:.3f} s |"
        )
    return "\n".join(lines)


def fit_table(fit: dict[str, Any]) -> str:
    if "error" in fit:
        return f"fitting failed: {fit['error']}"
    return "\n".join(
        [
            "| picture | limit | result | output | CPU (median) | of which PNG decode | JPEG encode | worst loop stall (async) |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
            f"| 4K PNG, {fit['input_bytes'] / 1e6:.1f} MB | {fit['limit'] / 2**20:.0f} MiB | {fit['how']}, {fit['mime_type']},"
            f" {fit['width']}x{fit['height']} | {fit['output_bytes'] / 1e6:.2f} MB | {fit['cpu_s_median'] * 1000:.0f} ms"
            f" | {fit['decode_s'] * 1000:.0f} ms | {fit['encode_s'] * 1000:.0f} ms | {fmt_ms(fit['async_worst_stall_ms'])} |",
        ]
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def fit_goal(fit: dict[str, Any]) -> str:
    full = fit["how"] != "downscaled"
    return (
        f"Goal for bot.imaging.fit_for_upload: a 4K picture under 10 MiB in <= {GOAL_FIT_S * 1000:.0f} ms CPU at full resolution:"
        f" {fit['cpu_s_median'] * 1000:.0f} ms ({fit['decode_s'] * 1000:.0f} ms PNG decode +"
        f" {fit['encode_s'] * 1000:.0f} ms JPEG encode), {'full' if full else 'reduced'} resolution"
        f" -> {verdict(full and fit['cpu_s_median'] <= GOAL_FIT_S)}"
    )


def goals(results: list[dict[str, Any]], client: str = "ours") -> list[str]:
    def cell(c: str, n: int) -> dict[str, Any] | None:
        for r in results:
            if r["client"] == c and r["size"] == "4K" and r["in_flight"] == n and "error" not in r:
                return r
        return None

    out = [f"Goals for {CLIENT_LABELS[client]}, 4K answers:"]
    levels = sorted({r["in_flight"] for r in results if r["size"] == "4K"})
    mine = {n: cell(client, n) for n in levels}
    sdk = {n: cell("sdk", n) for n in levels}
    have = {n: r for n, r in mine.items() if r}
    if have:
        worst = {n: r["worst_stall_ms"] for n, r in have.items()}
        out.append(
            f"- worst stall <= {GOAL_STALL_MS:.0f} ms: "
            + ", ".join(f"{n} in flight {v:.1f} ms" for n, v in worst.items())
            + f" -> {verdict(all(v <= GOAL_STALL_MS for v in worst.values()))}"
        )
        cpu = {n: r["cpu_per_answer_s"] for n, r in have.items()}
        out.append(
            f"- CPU per answer <= {GOAL_CPU_S} s: "
            + ", ".join(f"{n}: {v:.3f} s" for n, v in cpu.items())
            + f" -> {verdict(all(v <= GOAL_CPU_S for v in cpu.values()))}"
        )
        ratios = {n: cpu[n] / sdk[n]["cpu_per_answer_s"] for n in cpu if sdk.get(n)}
        if ratios:
            out.append(
                f"- CPU <= {GOAL_CPU_RATIO} x the SDK's: "
                + ", ".join(f"{n}: {v:.2f}x" for n, v in ratios.items())
                + f" -> {verdict(all(v <= GOAL_CPU_RATIO for v in ratios.values()))}"
            )
        if have.get(8) and sdk.get(8):
            ratio = have[8]["peak_rss_mb"] / sdk[8]["peak_rss_mb"]
            out.append(
                f"- peak RSS at 8 in flight <= {GOAL_RSS_RATIO} x the SDK's: {have[8]['peak_rss_mb']:.0f} MB vs"
                f" {sdk[8]['peak_rss_mb']:.0f} MB = {ratio:.2f}x -> {verdict(ratio <= GOAL_RSS_RATIO)}"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bot"]:
        from .bot import main as bot_main

        return bot_main(argv[1:])
    if argv[:1] == ["cluster"]:
        from .cluster import main as cluster_main

        return cluster_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round per cell, 1K only at 4 in flight, no sdk-httpx (about a minute)")
    parser.add_argument("--clients", nargs="+", choices=sorted(CLIENT_LABELS), help="default: all")
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), help="default: 1K 4K")
    parser.add_argument("--in-flight", nargs="+", type=int, help="default: 1 4 8 16")
    parser.add_argument("--no-fit", action="store_true", help="skip the fitting measurement")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)

    clients = args.clients or ([c for c in CLIENT_LABELS if c != "sdk-httpx"] if args.quick else list(CLIENT_LABELS))
    sizes = args.sizes or ["1K", "4K"]
    plan: list[tuple[str, int]] = []
    for size in sizes:
        if args.in_flight:
            levels = args.in_flight
        elif args.quick and size == "1K":
            levels = [4]
        else:
            levels = [1, 4, 8, 16]
        plan += [(size, n) for n in levels]

    began = time.monotonic()
    print("preparing payloads (cached after the first run)...", file=sys.stderr, flush=True)
    payloads = {name: payload(name) for name in sizes if name in SIZES}
    if "4K" not in payloads and not args.no_fit:
        payloads["4K"] = payload("4K")
    for p in payloads.values():
        print(f"  {p.name}: {p.width}x{p.height} PNG, {p.length / 1e6:.1f} MB (answer ~{p.json_bytes / 1e6:.1f} MB)", file=sys.stderr)

    proc, url = start_double(list(payloads.values()))
    results: list[dict[str, Any]] = []
    fit: dict[str, Any] | None = None
    try:
        for size, n in plan:
            p = payloads[size]
            set_default(url, p)
            count = answers_for(size, n, args.quick)
            for client in clients:
                r = run_worker(
                    [
                        "answers",
                        "--client",
                        client,
                        "--url",
                        url,
                        "--size",
                        size,
                        "--in-flight",
                        str(n),
                        "--answers",
                        str(count),
                        "--expect",
                        f"{p.length}:{p.sha256}",
                    ]
                )
                r.update(client=client, size=size, in_flight=n)
                results.append(r)
                shown = (
                    r.get("error")
                    or f"cpu {r['cpu_per_answer_s']:.3f} s, worst stall {r['worst_stall_ms']:.1f} ms, peak {r['peak_rss_mb']:.0f} MB"
                )
                print(f"  {size} x{n:<2} {client:<9} {shown} ({r['elapsed']:.0f} s)", file=sys.stderr, flush=True)
        if not args.no_fit:
            fit = run_worker(["fit", "--png", str(payloads["4K"].path), "--limit", str(LIMIT), "--repeat", "1" if args.quick else "5"])
    finally:
        stop_double(proc)

    print()
    print(
        f"Answers served by the relay double (Gemini native, pretty-printed JSON) over loopback; each cell in a fresh process. {os.cpu_count()} CPUs."
    )
    print()
    print(table(results))
    print()
    print(
        "CPU: user+system of the client's process while answering, per answer (the probe's own cost taken out)."
        " Stall: how late a task sleeping 1 ms wakes up. Worst busy: CPU time the loop's thread itself used during"
        " the worst tick (the rest of a stall is the OS not running the process). Peak RSS: the process's high-water mark."
    )
    if fit:
        print()
        print(fit_table(fit))
    print()
    for client in ("ours", "decoder"):
        if any(r["client"] == client and r["size"] == "4K" for r in results):
            print("\n".join(goals(results, client)))
    if fit and "error" not in fit:
        print(fit_goal(fit))
    print(f"\n(total {time.monotonic() - began:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "fit": fit}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
