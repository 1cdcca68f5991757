"""Registry of imbalanced-learn resamplers. They act on metadata rows only, inside the fold's
training part (imbalanced-learn's Pipeline calls them during fit, never on validation rows), and
their synthetic rows never reach an image branch.

Each entry yields the pipeline steps it adds, as (name, sampler) pairs: none, one, or two for the
combined samplers (under-sampling of the majority class, then over-sampling of the rest). Their
names are STEP_NAMES, so that a library's refusal of any of them names `metadata.sampler`.
"""

from __future__ import annotations

from collections import Counter
from types import MappingProxyType

import numpy as np

STEP_NAMES = ("resample", "resample_under", "resample_over")
SMOTE_NEIGHBORS = 3


def majority_to_second(y) -> dict:
    """The under-sampling target: the largest class down to the second-largest class's size.
    A callable, so it is computed from the labels the sampler is fitted on (the fold's training
    rows, or an inner fit's), never from rows outside them."""
    (majority, _), *rest = Counter(np.asarray(y).tolist()).most_common()
    return {majority: rest[0][1]} if rest else {}


def _none(seed: int) -> list:
    return []


# imbalanced-learn is imported when a sampler is made: validating a config's sampler name (as the
# read-only commands do) must not pay for importing it.
def _random_over(seed: int) -> list:
    from imblearn.over_sampling import RandomOverSampler

    return [("resample", RandomOverSampler(random_state=seed))]


def _random_under(seed: int) -> list:
    from imblearn.under_sampling import RandomUnderSampler

    return [("resample", RandomUnderSampler(random_state=seed))]


def _smote(seed: int) -> list:
    return [("resample", _small_class_smote()(random_state=seed, k_neighbors=SMOTE_NEIGHBORS))]


def _under_majority(seed: int):
    from imblearn.under_sampling import RandomUnderSampler

    return ("resample_under", RandomUnderSampler(sampling_strategy=majority_to_second,
                                                 random_state=seed))


def _under_over(seed: int) -> list:
    from imblearn.over_sampling import RandomOverSampler

    # after the under-sampling the largest classes tie: "auto" lifts every other class to them
    return [_under_majority(seed), ("resample_over", RandomOverSampler(random_state=seed))]


def _under_smote(seed: int) -> list:
    smote = _small_class_smote()(random_state=seed, k_neighbors=SMOTE_NEIGHBORS)
    return [_under_majority(seed), ("resample_over", smote)]


_SMOTE_CLASS = None


def _small_class_smote():
    """SMOTE that also works for a class with k rows or fewer in a training part, where plain
    SMOTE raises: its k drops to the class's rows - 1, and a class of one row is copied (what
    random over-sampling does to it). Classes with more than k rows get exactly plain SMOTE.
    Defined on first use, so that importing this module does not import imbalanced-learn."""
    global _SMOTE_CLASS
    if _SMOTE_CLASS is None:
        from imblearn.over_sampling import SMOTE
        from scipy import sparse
        from sklearn.base import clone
        from sklearn.utils import _safe_indexing

        class SmallClassSMOTE(SMOTE):
            def _fit_resample(self, X, y):
                self._validate_estimator()
                X_resampled, y_resampled = [X.copy()], [y.copy()]
                for label, n_new in self.sampling_strategy_.items():
                    if n_new == 0:
                        continue
                    X_class = _safe_indexing(X, np.flatnonzero(y == label))
                    n_rows = X_class.shape[0]
                    if n_rows == 1:
                        X_new = _safe_indexing(X_class, np.zeros(n_new, dtype=int))
                        y_new = np.full(n_new, label, dtype=y.dtype)
                    else:
                        nn = self.nn_k_
                        if n_rows < nn.n_neighbors:  # k + 1 (the row itself) neighbours
                            nn = clone(nn).set_params(n_neighbors=n_rows)
                        nn.fit(X_class)
                        nns = nn.kneighbors(X_class, return_distance=False)[:, 1:]
                        X_new, y_new = self._make_samples(X_class, y.dtype, label, X_class, nns,
                                                          n_new, 1.0)
                    X_resampled.append(X_new)
                    y_resampled.append(y_new)
                stack = (lambda parts: sparse.vstack(parts, format=X.format)) if (
                    sparse.issparse(X)) else np.vstack
                return stack(X_resampled), np.hstack(y_resampled)

        SmallClassSMOTE.__module__ = __name__
        SmallClassSMOTE.__qualname__ = "SmallClassSMOTE"
        _SMOTE_CLASS = SmallClassSMOTE
    return _SMOTE_CLASS


def __getattr__(name: str):
    # pickle finds the class by this module's attribute, made on first use
    if name == "SmallClassSMOTE":
        return _small_class_smote()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SAMPLERS = MappingProxyType({
    "none": _none,
    "random_over": _random_over,
    "random_under": _random_under,
    "smote": _smote,
    "under_over": _under_over,
    "under_smote": _under_smote,
})


def sampler_steps(name: str, *, seed: int) -> list:
    """The (step name, sampler) pairs registered under `name`, in pipeline order."""
    return SAMPLERS[name](seed)
