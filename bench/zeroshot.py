"""Zero-shot top-1 of an encoder on every installed built-in dataset (test split).

    python bench/zeroshot.py [--encoder conse] [--datasets textile digits]

Writes bench/results/zeroshot.md and zeroshot.json. Nothing is tuned: the text classifier is
the template-averaged class-name embedding, with the templates fixed in the dataset table.
"""

from __future__ import annotations

import time

from _common import RESULTS, base_parser, command_line, installed_datasets

from genba.cache import TensorCache
from genba.data import load_dataset
from genba.encoders import load_encoder
from genba.report import markdown_table, write_json
from genba.zeroshot import evaluate_zeroshot


def main() -> None:
    args = base_parser(__doc__).parse_args()
    encoder = load_encoder(args.encoder)
    cache = TensorCache(args.cache_dir)
    rows, results = [], []
    for name in installed_datasets(args.datasets):
        start = time.perf_counter()
        result = evaluate_zeroshot(encoder, load_dataset(name), "test", cache=cache)
        result["seconds"] = time.perf_counter() - start
        results.append(result)
        rows.append([name, result["n"], len(result["classnames"]), result["top1"], result["chance"], result["majority"]])
        print(f"{name}: top-1 {result['top1']:.1f} (chance {result['chance']:.1f}) in {result['seconds']:.1f}s")
    table = markdown_table(["dataset", "n test", "classes", "top-1 (%)", "chance (%)", "majority class (%)"], rows)
    text = (
        f"# Zero-shot top-1, encoder `{args.encoder}`\n\nCommand: `{command_line()}`\n\n"
        f"Encoder provenance: `{encoder.provenance}`\n\n{table}\n\n"
        "Nothing tuned: class text = mean of the dataset's fixed prompt templates. "
        "Chance = 100/C; majority = share of the largest class in the test split.\n"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "zeroshot.md").write_text(text)
    write_json(RESULTS / "zeroshot.json", {"encoder": args.encoder, "results": results})
    print(text)


if __name__ == "__main__":
    main()
