"""Registry of imbalanced-learn resamplers. They act on metadata rows only, inside the fold's
training part (imbalanced-learn's Pipeline calls them during fit, never on validation rows), and
their synthetic rows never reach an image branch."""

from __future__ import annotations

from types import MappingProxyType

from imblearn.over_sampling import SMOTE, RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler


def _none(seed: int):
    return None


SAMPLERS = MappingProxyType({
    "none": _none,
    "random_over": lambda seed: RandomOverSampler(random_state=seed),
    "random_under": lambda seed: RandomUnderSampler(random_state=seed),
    "smote": lambda seed: SMOTE(random_state=seed, k_neighbors=3),
})


def create_sampler(name: str, *, seed: int):
    """The sampler registered under `name`, or None for "none"."""
    return SAMPLERS[name](seed)
