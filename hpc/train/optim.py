"""The optimizer and its learning-rate schedule, from optax."""

from __future__ import annotations

import optax


def schedule(optimizer: dict, steps: int) -> optax.Schedule:
    """The learning rate at each step: an optional linear warm-up, then constant or a decay to
    ``end_factor`` times the peak at the last step."""
    peak = optimizer["learning_rate"]
    sched = optimizer["schedule"]
    warmup, end = sched["warmup_steps"], peak * sched["end_factor"]
    decay_steps = max(1, steps - warmup)
    kind = sched["kind"]
    if kind == "constant":
        main = optax.constant_schedule(peak)
    elif kind == "cosine":
        main = optax.cosine_decay_schedule(peak, decay_steps, alpha=sched["end_factor"])
    elif kind == "linear":
        main = optax.linear_schedule(peak, end, decay_steps)
    else:  # exponential: from peak to end (or to 1e-3·peak when end_factor is 0)
        rate = max(sched["end_factor"], 1e-3)
        main = optax.exponential_decay(peak, decay_steps, rate)
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def build_optimizer(optimizer: dict, steps: int) -> optax.GradientTransformation:
    lr = schedule(optimizer, steps)
    name = optimizer["name"]
    if name == "adam":
        tx = optax.adam(lr)
    elif name == "adamw":
        tx = optax.adamw(lr, weight_decay=optimizer["weight_decay"])
    elif name == "sgd":
        tx = optax.sgd(lr, momentum=optimizer["momentum"])
    elif name == "lion":
        tx = optax.lion(lr, weight_decay=optimizer["weight_decay"])
    else:
        tx = optax.lamb(lr, weight_decay=optimizer["weight_decay"])
    if optimizer["clip_norm"]:
        tx = optax.chain(optax.clip_by_global_norm(optimizer["clip_norm"]), tx)
    return tx
