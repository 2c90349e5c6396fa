"""On-the-fly exploration (DESIGN §9; the paper's section 4 promise, and every peer's main loop: DP-GEN, FLARE,
apax): instead of ranking a pool made beforehand, walkers run Langevin MD with the current model, and every
``check_every`` steps a walker's frame is judged by the model's calibrated uncertainty — accurate, a candidate
for the oracle, or too uncertain to follow (the walker stops) — after sanity checks of its physics.

The sub-wing, as schnetpack's ``md/`` separates system, integrators, initial conditions, simulator and hooks:

* :mod:`.checks` — the sanity checks, one class each in a registry, and the bands of a judged frame;
* :mod:`.walker` — a walker's state, its file, how walkers start, resume and restart, their counts;
* :mod:`.starts` — the start geometries and the initial structures the oracle labels;
* :mod:`.dynamics` — batched BAOAB steps with the model and its uncertainty, NPT walkers through ASE;
* :mod:`.shard` — one walker job of an iteration, and the iteration's pool gathered from every job.

Nothing is imported here: take the module you need (the campaign's settings import :mod:`.checks`).
"""
