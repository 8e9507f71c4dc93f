"""Run every benchmark script in benchmarks/, each in its own process, and record the results.

`make bench` calls this. The set is discovered, not listed: `machine.py` (machine + matmul peak)
and `param_counts.py` first, then every `bench_*.py` in name order -- so a benchmark another helper
adds is picked up without editing this file, and one that does not exist is simply not there.
Left out unless named with --only: `foil_binding.py` (a training experiment of minutes, not a
throughput benchmark) and `profile_train_step.py` (a diagnostic, its output is a profile).

Each script's table is printed as it finishes. Results go to benchmarks/results.jsonl, one JSON
object per measurement, each with the timestamp, the machine description and the script name: a
script that takes `--json PATH` (its --help says so) writes its own per-measurement records there
and they are copied over; for any other script one record holds its printed table.

    .venv/bin/python benchmarks/run_all.py [--only bench_train_step,param_counts] [--skip ...] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

HERE = Path(__file__).resolve().parent
FIRST = ("machine.py", "param_counts.py")
OPT_IN = ("foil_binding.py", "profile_train_step.py")


def discover(only: set[str] | None, skip: set[str]) -> list[Path]:
    names = [n for n in FIRST if (HERE / n).is_file()]
    names += sorted(p.name for p in HERE.glob("bench_*.py") if p.name not in names)
    names += [n for n in OPT_IN if only and n.removesuffix(".py") in only and (HERE / n).is_file()]
    chosen = [n for n in names if (only is None or n.removesuffix(".py") in only) and n.removesuffix(".py") not in skip]
    if only:
        missing = only - {n.removesuffix(".py") for n in chosen}
        if missing:
            print(f"not found in {HERE}: {', '.join(sorted(missing))}")
    return [HERE / n for n in chosen]


def takes_json(script: Path) -> bool:
    """Whether the script accepts `--json PATH` (one JSON object per measurement)."""
    try:
        done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0 and "--json" in done.stdout


def run_one(script: Path, timeout: float, extra: list[str]) -> tuple[int, str, float, list[dict]]:
    """(return code, stdout + stderr tail, seconds, the script's own JSON records)."""
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "records.jsonl"
        args = [sys.executable, str(script), *extra]
        if script.name != "machine.py" and takes_json(script):
            args += ["--json", str(json_path)]
        start = time.perf_counter()
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
            code, output = done.returncode, done.stdout + (f"\n[stderr]\n{done.stderr[-4000:]}" if done.returncode else "")
        except subprocess.TimeoutExpired as err:
            code, output = -1, f"{err.stdout or ''}\n[timed out after {timeout:.0f} s]"
        seconds = time.perf_counter() - start
        if json_path.is_file():
            records = [json.loads(line) for line in json_path.read_text().splitlines() if line.strip()]
    return code, output if isinstance(output, str) else output.decode(), seconds, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated script names without .py")
    parser.add_argument("--skip", default="", help="comma-separated script names without .py")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per script")
    parser.add_argument("--results", default=str(HERE / "results.jsonl"))
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    scripts = discover(only, set(filter(None, args.skip.split(","))))
    machine = describe()
    failed = []
    with open(args.results, "a") as results:
        for script in scripts:
            print(f"\n=== {script.name} ===", flush=True)
            extra = ["--json"] if script.name == "machine.py" else []
            code, output, seconds, records = run_one(script, args.timeout, extra)
            print(output.rstrip())
            print(f"[{script.name}: exit {code}, {seconds:.0f} s]", flush=True)
            stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            base = {"timestamp": stamp, "script": script.name, "returncode": code, "seconds": round(seconds, 1)}
            if script.name == "machine.py" and code == 0:
                records = [json.loads(output.strip().splitlines()[-1])]
            if not records:
                records = [{"table": output}]
            for record in records:
                record.setdefault("machine", machine)
                results.write(json.dumps({**base, **record}) + "\n")
            if code != 0:
                failed.append(script.name)
    print(f"\nresults appended to {args.results}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
