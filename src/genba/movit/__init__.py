"""MoViT: a vision transformer with an external attention memory, for sites with little data.

memory.py (retrieval, EMA writes, replacement, prototypes), vit.py (the transformer), train.py
(the Objective trained by genba.train.fit), data.py (nested fractions, pixels), head.py (the head
setting over frozen encoder tokens, linear probe), artefact.py (the saved model + memory),
cli.py (`genba movit train | predict | prototypes`).
"""
