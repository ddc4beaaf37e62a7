"""Cold vs warm `genba zeroshot`: the second run must come from the feature cache.

    python bench/cache_speed.py [--dataset textile] [--encoder conse]

Runs the CLI twice as subprocesses against a fresh, empty cache folder and reports both wall
times and their ratio. Writes bench/results/cache_speed.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from _common import RESULTS, command_line

from genba.report import markdown_table


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="textile")
    parser.add_argument("--encoder", default="conse")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        argv = [sys.executable, "-m", "genba.cli", "zeroshot", "--dataset", args.dataset, "--encoder", args.encoder, "--cache-dir", cache, "--quiet"]
        cold, warm = timed(argv), timed(argv)
    table = markdown_table(["run", "wall time (s)"], [["cold (empty cache)", cold], ["warm (cache hit)", warm], ["ratio cold / warm", cold / warm]])
    text = f"# Feature cache: cold vs warm `genba zeroshot --dataset {args.dataset}`\n\nCommand: `{command_line()}`\n\n{table}\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cache_speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
