"""Swiss Army Knife (SAK; Lu, Cao, Wang, arXiv 2410.14633): distil several vision foundation
models into one small multi-task dense student that keeps each teacher's bias.

    scenes.py    seeded composite scenes (28x28 objects pasted on textile photos) with per-pixel
                 semantic class / boundary / saliency / depth (layer order); folder.py: user data
    teachers.py  teacher registry (spatial map + pooled vector, cached with provenance + licence);
                 teacher_models.py: EfficientNet-Lite0, the ConSE VLM per location, PP-OCRv4 det,
                 hf:<dir> DINOv2 / CLIP / SAM vision towers
    student.py   ViT stem (TAS), teacher-specific adapter paths (TSAP), MoR routers, dense heads
    losses.py    0.9 cosine + 0.1 smooth-L1 per teacher and level; task losses
    metrics.py   mIoU, boundary F1 (fixed threshold, 1-px tolerance), maxF, RMSE, Delta-m
    objectives.py  stage 1 (distil) and stage 2 (multi-task + distillation) Objectives for genba.train.fit
    pipeline.py  targets, variants (sak, many-to-one, ablations, single-task, teacher heads), evaluation
    cli.py       `genba sak distill | train | predict`
"""
