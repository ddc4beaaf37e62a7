"""Continual learning of vision-language models on genba's one training engine.

    genba continual --stream textile,fashion-mnist,digits --method replay --setting xtail --seed 0

Pieces (one small module each): `stream` (task streams: datasets, class subsets
`name[0-4]`, class-incremental splits `name#5`, folder:/csv:), `learner` (the continual
learner: logits = scale * cos(image embedding, frozen class text), a zero-initialised
residual adapter visual -> joint), `strategies/` (the methods), `buffer` (the bounded,
persisted replay buffer), `metrics` (accuracy matrix, Transfer / Avg / Last, BWT, FWT,
Forgetting, drift, CKA), `protocol` (the MTIL / X-TAIL run), `peft_lora` (LoRA through
`peft` for hf: CLIP checkpoints), `cli`.

The strategy contract (reused by other genba packages, e.g. continual visual mapping), driven by
the one task loop `genba.continual.loop.run_tasks`:

    from genba.continual.strategies import make_strategy
    strategy = make_strategy("replay", seed=run_seed, learner=objective, buffer_size=500)
    # unknown name / hyperparameter, or a learner lacking what the method `requires` -> GenbaError
    records, evaluations = run_tasks(objective, steps, strategy, train_config, evaluate=...)
    # per task t: objective.install(strategy.begin_task(objective, t))   modules the strategy adds
    #             data = strategy.task_data(task_data, t)                 replay mixes buffer rows in
    #             if strategy.trains: genba.train.fit(objective, data, cfg, callbacks=strategy.callbacks(objective))
    #             strategy.end_task(objective, task_data, t)              buffer / Fisher / snapshot

`objective` is a `ContinualObjective`: a `genba.train.Objective` whose
  * `forward(batch)` is the task loss (mean over the batch rows),
  * `logits(batch) -> (B, C)` are the logits over the classes known so far, columns in global
    class order 0..C-1 (the classes of the tasks seen so far form this prefix, so the first
    C_old columns are the classes of earlier tasks),
  * batches are dicts of equal-length tensors with at least "x" (the model input) and "y"
    (the global class index, int64);
  * optional: `embed(batch) -> (B, D)` unit image embeddings (ZSCL distils their similarity
    to a reference vocabulary; drift metrics read them), `reference_batch(x)` building a
    batch from reference inputs.
  * `provides` / `slots` (genba.continual.objective): the capabilities it offers strategies and
    the attributes strategy modules are installed into.
Strategies only use this interface, so any model that implements it gets replay, LwF, EWC,
L2 and the rest without change.
"""



def __getattr__(name: str):
    # Lazy, so that `genba.cli` (which imports genba.continual.cli) loads no torch: `genba predict`
    # runs on onnxruntime alone.
    if name in ("Strategy", "make_strategy", "strategy_names"):
        from genba.continual import strategies

        return getattr(strategies, name)
    raise AttributeError(f"module 'genba.continual' has no attribute {name!r}")


__all__ = ["Strategy", "make_strategy", "strategy_names"]
