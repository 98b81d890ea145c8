"""Speed and fidelity benchmarks (not tests): ``python -m eval.bench.encoder_speed`` and friends.

Encoder benchmarks run on random-weight checkpoints with real architectures
(``encoder_models.py``); their results and commands are recorded in models/README.md.
"""
