"""SAK benchmark on the composite scenes (THESE ARE COMPOSITES; see genba.sak.scenes).

    python bench/sak.py [--seeds 0 1 2] [--train 800 --val 200 --test 400] [--epochs1 6 --epochs2 6]

Fixed seeded train / val / test scenes (64 px); teacher targets (efficientnet-lite0, conse-dense,
ppocr-det) computed once and read from the feature cache. Per training seed, every method uses
the same student size (ViT stem dim/depth below) and the same TrainConfig (fixed in advance, not
tuned: AdamW lr 1e-3, weight decay 0.05, batch 32, 5% warmup, cosine, clip 1.0; adapter scales at
10x lr; the best epoch by validation loss). Stage 1 = distillation, stage 2 = tasks + distillation kept (weight 1).
    sak, no-router, stage1-only      from one SAK stage-1 student (TSAP)
    no-tsap                          its own stage 1, teachers distilled from the stem (linear heads)
    many-to-one                      its own stage 1, RADIO-style MLP heads on the stem
    single-task (Delta-m reference)  many-to-one's stage-1 student trained on one task
    teacher:<t>                      a head per task on teacher t's frozen cached map (same epochs as stage 2)
Delta-m of each method is against the single-task students of the same seed. Cost: deployed
student parameters and inference images/s (batch 32, 64 px) vs all teachers run one after the
other on the same images (their 128 px input), measured in this run.
Writes bench/results/sak.md, sak.json, sak_scenes.png, sak_gates.png.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, base_parser, command_line

from genba.cache import TensorCache
from genba.report import write_json
from genba.sak import pipeline as P
from genba.sak.metrics import TASK_METRIC, delta_m
from genba.sak.scenes import SceneSpec, make_splits
from genba.sak.teachers import load_teacher
from genba.train import TrainConfig

TEACHERS = ["efficientnet-lite0", "conse-dense", "ppocr-det"]
METRICS = ["miou", "boundary_f1", "maxf", "depth_rmse"]


def train_config(epochs: int, seed: int) -> TrainConfig:
    return TrainConfig(lr=1e-3, epochs=epochs, batch_size=32, weight_decay=0.05, warmup=0.05, clip_norm=1.0, seed=seed)


def images_per_second(fn, images: torch.Tensor, batch: int = 32, repeats: int = 2) -> float:
    fn(images[:batch])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            fn(images[i:i + batch])
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def run_seed(seed, splits, targets, info, tasks, args, log):
    tr = {s: P.split_tensors(splits[s], targets[s]) for s in ("train", "val")}
    kw = dict(teachers=list(info), tasks=list(tasks))
    dims = dict(dim=args.dim, depth=args.depth, heads=args.heads)
    results, gates, models = {}, {}, {}

    def stage1(variant):
        torch.manual_seed(seed)
        model = P.build_student(variant, info, tasks, **dims)
        P.train_stage(model, tr["train"], tr["val"], train_config(args.epochs1, seed), stage=1, **kw, desc=f"{variant} s1")
        return model

    def stage2(name, model, distill_weight=1.0, task_list=None):
        t0 = time.perf_counter()
        P.train_stage(model, tr["train"], tr["val"], train_config(args.epochs2, seed), stage=2, teachers=list(info),
                      tasks=task_list or list(tasks), distill_weight=distill_weight, desc=name)
        metrics, g = P.evaluate(model, splits["test"])
        log(f"seed {seed} {name}: {json.dumps({k: round(v, 3) for k, v in metrics.items()})} ({time.perf_counter() - t0:.0f}s)")
        return metrics, g

    s1 = stage1("sak")
    scales = {t: [round(float(a.scale), 3) for a in path.adapters] for t, path in zip(info, s1.paths.values())}
    log(f"seed {seed} sak stage-1 adapter scales per block: {json.dumps(scales)}")
    for name, router in (("sak", "learned"), ("no-router", "average")):
        model = copy.deepcopy(s1)
        for r in model.routers.values():
            r.learned = router == "learned"
        results[name], gates[name] = stage2(name, model)
        models[name] = model
    frozen = copy.deepcopy(s1)
    P.freeze_student(frozen)
    results["stage1-only"], gates["stage1-only"] = stage2("stage1-only", frozen, distill_weight=0.0)
    results["no-tsap"], _ = stage2("no-tsap", stage1("no-tsap"))
    m2o = stage1("many-to-one")
    results["many-to-one"], _ = stage2("many-to-one", copy.deepcopy(m2o))
    single = {}
    for task in tasks:
        metrics, _ = stage2(f"single:{task}", copy.deepcopy(m2o), task_list=[task])
        single[TASK_METRIC[task]] = metrics[TASK_METRIC[task]]  # the other heads were not trained
    results["single-task"] = single
    for t in info:
        torch.manual_seed(seed)
        head = P.teacher_head_model(t, info, tasks, P.build_student("sak", info, tasks, **dims).cfg)
        t0 = time.perf_counter()
        P.train_stage(head, tr["train"], tr["val"], train_config(args.epochs2, seed), stage=2, teachers=[], tasks=list(tasks),
                      distill_weight=0.0, input_key=f"{t}/dense", desc=f"teacher:{t}")
        metrics, _ = P.evaluate(head, splits["test"], inputs=targets["test"][f"{t}/dense"])
        results[f"teacher:{t}"] = metrics
        log(f"seed {seed} teacher:{t}: {json.dumps({k: round(v, 3) for k, v in metrics.items()})} ({time.perf_counter() - t0:.0f}s)")
    dm = {name: delta_m(m, single) for name, m in results.items()}
    return results, dm, gates, models["sak"]


def figure(model, scenes, path, count=4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outputs, _ = P.predict_outputs(model, scenes.images[:count])
    cols = ["image", "semantic GT", "semantic", "boundary GT", "boundary", "saliency GT", "saliency", "depth GT", "depth"]
    fig, axes = plt.subplots(count, len(cols), figsize=(1.6 * len(cols), 1.7 * count))
    for i in range(count):
        panels = [scenes.images[i].permute(1, 2, 0).numpy(), scenes.semantic[i], outputs["semantic"][i].argmax(0),
                  scenes.boundary[i], outputs["boundary"][i, 0].sigmoid() >= 0.5, scenes.saliency[i],
                  outputs["saliency"][i, 0].sigmoid(), scenes.depth[i], outputs["depth"][i, 0]]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            kwargs = {} if j == 0 else ({"cmap": "tab10", "vmin": 0, "vmax": 9} if j in (1, 2) else
                                        {"cmap": "viridis", "vmin": 0, "vmax": 1} if j >= 7 else {"cmap": "gray", "vmin": 0, "vmax": 1})
            ax.imshow(np.asarray(panel, dtype=np.uint8 if j == 0 else np.float32), **kwargs)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
    fig.suptitle("SAK student (seed 0) on test composites: prediction beside ground truth", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gate_figure(gates, representations, path, seeds=3):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(gates)
    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.8 / len(representations)
    for r, name in enumerate(representations):
        ax.bar(np.arange(len(tasks)) + r * width, [gates[t][r] for t in tasks], width, label=name)
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks)
    ax.set_ylabel("mean gate weight (test)")
    ax.axhline(1 / len(representations), color="k", lw=0.5, ls="--")
    ax.legend(fontsize=7)
    ax.set_title(f"SAK MoR router: mean gate per task over the representations ({seeds} seed(s))", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--epochs1", type=int, default=6)
    parser.add_argument("--epochs2", type=int, default=6)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "sak"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    lines: list[str] = []

    def log(message):
        print(message, flush=True)
        lines.append(message)

    splits = make_splits({"train": args.train, "val": args.val, "test": args.test}, SceneSpec(size=64))
    t0 = time.perf_counter()
    targets, info, provenance = P.prepare_targets(splits, TEACHERS, TensorCache(args.cache_dir))
    target_seconds = time.perf_counter() - t0
    tasks = P.task_channels(splits["train"])

    all_results, all_dm, all_gates, sak_model = {}, {}, {}, None
    for seed in args.seeds:
        results, dm, gates, model = run_seed(seed, splits, targets, info, tasks, args, log)
        all_results[seed], all_dm[seed] = results, dm
        all_gates[seed] = gates
        sak_model = model if sak_model is None else sak_model

    # cost: the deployed SAK student vs all teachers together, same images, same run
    images = splits["test"].images[:128]
    student_ips = images_per_second(lambda x: sak_model(x, with_teachers=False), images)
    teacher_models = [load_teacher(t) for t in TEACHERS]
    teacher_ips = {t.name: images_per_second(t, images) for t in teacher_models}
    seconds_per_image = sum(1.0 / v for v in teacher_ips.values())
    teachers_ips = 1.0 / seconds_per_image
    teacher_params = {t.name: t.parameter_count() for t in teacher_models}
    cost = {"student_params": sak_model.deployed_parameters(), "teacher_params": teacher_params,
            "teachers_params_sum": sum(teacher_params.values()), "student_images_per_s": student_ips,
            "teacher_images_per_s": teacher_ips,
            "teachers_images_per_s": teachers_ips, "speed_ratio": student_ips / teachers_ips,
            "size_ratio": sum(teacher_params.values()) / sak_model.deployed_parameters()}

    methods = list(all_results[args.seeds[0]])
    mean = lambda xs: float(np.mean(xs))
    std = lambda xs: float(np.std(xs))
    summary = {m: {k: [all_results[s][m][k] for s in args.seeds] for k in METRICS if k in all_results[args.seeds[0]][m]} for m in methods}
    dm_summary = {m: [all_dm[s][m] for s in args.seeds] for m in methods}
    reps = ["stem"] + [f"path:{t}" for t in info]
    gate_mean = {task: [mean([all_gates[s]["sak"][task][r] for s in args.seeds]) for r in range(len(reps))] for task in tasks}
    seconds = time.perf_counter() - start

    out = Path(args.out)
    figure(sak_model, splits["test"], out.with_name(out.name + "_scenes.png"))
    gate_figure(gate_mean, reps, out.with_name(out.name + "_gates.png"), len(args.seeds))
    payload = {
        "command": command_line(), "seconds": seconds, "teacher_target_seconds": target_seconds,
        "seeds": args.seeds, "scenes": {s: len(v) for s, v in splits.items()}, "scene_source": splits["train"].source,
        "student": {"dim": args.dim, "depth": args.depth, "heads": args.heads, "patch": 8, "image_size": 64},
        "train": {"stage1": train_config(args.epochs1, 0).to_dict(), "stage2": train_config(args.epochs2, 0).to_dict()},
        "teachers": provenance, "teacher_grids": info,
        "delta_m": {m: mean(v) for m, v in dm_summary.items()}, "delta_m_std": {m: std(v) for m, v in dm_summary.items()},
        "delta_m_per_seed": {m: v for m, v in dm_summary.items()},
        "metrics": {m: {k: mean(v) for k, v in d.items()} for m, d in summary.items()},
        "metrics_per_seed": summary, "gates": {"representations": reps, "mean": gate_mean,
                                               "per_seed": {s: all_gates[s]["sak"] for s in args.seeds}},
        "cost": cost, "log": lines,
    }
    write_json(out.with_suffix(".json"), payload)

    rows = []
    for m in methods:
        digits = lambda k: 4 if k == "depth_rmse" else 2
        cells = [f"{mean(summary[m][k]):.{digits(k)}f} ± {std(summary[m][k]):.{digits(k)}f}" if k in summary[m] else "-"
                 for k in METRICS]
        rows.append(f"| {m} | " + " | ".join(cells) + f" | {mean(dm_summary[m]):+.2f} ± {std(dm_summary[m]):.2f} |")
    gap = payload["delta_m"]["sak"] - payload["delta_m"]["many-to-one"]
    md = [
        "# SAK: several teachers distilled into one multi-task dense student (composite scenes)", "",
        f"Command: `{command_line()}`  ", f"Wall time: {seconds / 60:.1f} min on the shared 2-core CPU "
        f"(torch 1 thread; teacher targets {target_seconds:.0f} s, read from the feature cache when present).", "",
        "The scenes are COMPOSITES (28x28 objects cut by thresholding, pasted with occlusion on textile photos; "
        f"labels known by construction): {args.train} train / {args.val} val / {args.test} test at 64 px, fixed seed 0.", "",
        "Teachers: " + ", ".join(f"{t} ({provenance[t]['role']}; {provenance[t]['licence']})" for t in TEACHERS) + ".", "",
        f"Student: ViT stem dim {args.dim}, depth {args.depth}, {args.heads} heads, patch 8 (8x8 tokens); every method has this "
        f"stem. Training fixed in advance (not tuned): AdamW lr 1e-3, wd 0.05, batch 32, warmup 5%, cosine, clip 1.0 "
        "(TSAP adapter scales at 10x lr, no decay: set after a first seed-0 run where the paths stayed at the identity), "
        f"stage 1 {args.epochs1} epochs, stage 2 {args.epochs2} epochs, best epoch by validation loss; seeds {args.seeds}.", "",
        "Metrics on the test scenes (mean ± std over seeds): mIoU % (7 classes incl. background), boundary F1 % at the "
        "fixed threshold 0.5 with 1-px tolerance (not odsF), saliency maxF % (beta^2 = 0.3), depth RMSE (layer-order "
        "depth in [0, 1], lower is better). Delta-m % vs the single-task students of the same seed.", "",
        "| method | mIoU | boundary F1 | maxF | depth RMSE | Delta-m (%) |", "|---|---|---|---|---|---|", *rows, "",
        f"**SAK vs many-to-one Delta-m: {payload['delta_m']['sak']:+.2f} vs {payload['delta_m']['many-to-one']:+.2f} "
        f"(difference {gap:+.2f} points; per seed SAK {', '.join(f'{x:+.2f}' for x in dm_summary['sak'])}, "
        f"many-to-one {', '.join(f'{x:+.2f}' for x in dm_summary['many-to-one'])}).** Published (ViT-L, PASCAL-Context): "
        "SAK +2.30 vs RADIO +0.29.", "",
        "Router gate weights of SAK per task (mean over test images and seeds; uniform = "
        f"{1 / len(reps):.2f}):", "",
        "| task | " + " | ".join(reps) + " |", "|---|" + "---|" * len(reps),
        *[f"| {task} | " + " | ".join(f"{w:.3f}" for w in gate_mean[task]) + " |" for task in tasks], "",
        "Cost (same run, batch 32, 64 px images; teachers at their 128 px input, run one after the other):", "",
        "| | parameters | images/s |", "|---|---|---|",
        f"| SAK student (deployed: stem, paths, routers, heads) | {cost['student_params']:,} | {student_ips:.0f} |",
        *[f"| teacher {t} | {n:,} | {teacher_ips[t]:.0f} |" for t, n in teacher_params.items()],
        f"| all teachers together | {cost['teachers_params_sum']:,} | {teachers_ips:.0f} |", "",
        f"Student speed / teachers speed = **{cost['speed_ratio']:.1f}x**; teachers' parameters / student's = "
        f"**{cost['size_ratio']:.1f}x**. conse-dense contains EfficientNet-Lite0: each teacher is run on its own here, so "
        "that network is counted (and run) twice; counted once, the teachers hold "
        f"{cost['teachers_params_sum'] - teacher_params.get('efficientnet-lite0', 0) * ('conse-dense' in teacher_params):,} "
        "parameters.", "",
        f"Figures: `{out.name}_scenes.png` (test scenes, each task's prediction beside the ground truth), "
        f"`{out.name}_gates.png` (router gates).",
        "", "Log:", "", "```", *lines, "```", "",
    ]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md[:40]))
    # (conse-dense contains EfficientNet-Lite0: the sum counts that network twice, as each teacher runs on its own)


if __name__ == "__main__":
    main()
