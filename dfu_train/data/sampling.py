"""Registry of imbalanced-learn resamplers. They act on metadata rows only, inside the fold's
training part (imbalanced-learn's Pipeline calls them during fit, never on validation rows), and
their synthetic rows never reach an image branch."""

from __future__ import annotations

from types import MappingProxyType


def _none(seed: int):
    return None


# imbalanced-learn is imported when a sampler is made: validating a config's sampler name (as the
# read-only commands do) must not pay for importing it.
def _random_over(seed: int):
    from imblearn.over_sampling import RandomOverSampler

    return RandomOverSampler(random_state=seed)


def _random_under(seed: int):
    from imblearn.under_sampling import RandomUnderSampler

    return RandomUnderSampler(random_state=seed)


def _smote(seed: int):
    from imblearn.over_sampling import SMOTE

    return SMOTE(random_state=seed, k_neighbors=3)


SAMPLERS = MappingProxyType({
    "none": _none,
    "random_over": _random_over,
    "random_under": _random_under,
    "smote": _smote,
})


def create_sampler(name: str, *, seed: int):
    """The sampler registered under `name`, or None for "none"."""
    return SAMPLERS[name](seed)
