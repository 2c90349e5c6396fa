"""What the Snakefile imports while parsing: config validation, seeds, strategies and the batch plan.

Nothing here imports snakemake or torch (the Snakefile is parsed for every job).
"""

from __future__ import annotations

import hashlib

from oedal.campaign.settings import STRATEGIES, CampaignSettings, Strategy
from oedal.errors import SettingsError
from oedal.oed.selection import n_to_select
from oedal.settings import format_validation_error

SEED_MAX = 2**31 - 1


def validate_campaign(config: dict, where: str = "config") -> CampaignSettings:
    """Validate a workflow config (a dict from YAML); raise :class:`SettingsError` naming the key."""
    from pydantic import ValidationError

    try:
        return CampaignSettings.model_validate(config)
    except ValidationError as err:
        raise SettingsError(format_validation_error(err, where)) from None


def derive_seed(*parts: object) -> int:
    """A reproducible 31-bit seed from labels such as (campaign, strategy, seed, iteration, purpose).

    Uses SHA-256 of the joined parts, so seeds do not depend on Python's hash randomisation and two
    purposes never share a random stream."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") % SEED_MAX


def parse_strategy(name: str) -> Strategy:
    """``qs1-greedy`` → (qs1, greedy); ``random`` → (None, random); ``qbc`` → (qbc, qbc)."""
    if name not in STRATEGIES:
        raise SettingsError(f"strategies: unknown strategy {name!r} (known: {', '.join(STRATEGIES)})")
    return STRATEGIES[name]


def plan_batches(settings: CampaignSettings) -> list[int]:
    """Planned batch size m of every selection round (its length is the number of rounds).

    m is the selection rule's (oedal.oed.selection.n_to_select: select.n, or round(select.fraction ·
    N_train), the paper's 0.1·N_train), cut so that the training set never exceeds ``stop.max_train``;
    rounds end at ``stop.iterations`` or when the budget is spent. Planned sizes assume every label
    succeeds."""
    n_train, batches = settings.split.n_train, []
    for _ in range(settings.stop.iterations):
        m = n_to_select(settings.select.n, settings.select.fraction, n_train)
        if settings.stop.max_train is not None:
            m = min(m, settings.stop.max_train - n_train)
        if m <= 0:
            break
        batches.append(m)
        n_train += m
    return batches
