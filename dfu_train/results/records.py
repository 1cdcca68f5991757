"""The shapes of the files dfu writes into a sweep folder, checked before any of them is used.

Every file read back from storage (the manifest, fold records, confirmations, prune marks, the
lease) is validated here with pydantic: a file that does not have the shape dfu writes is set
aside with a reason instead of crashing a reader or being ranked. Which records belong to the
sweep (its cohort, its fold assignment, its planned configs) is decided in `store.check_records`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONFIG_ID = r"^[0-9a-f]{6,64}$"  # config ids name files: hex only, never a path
EXPERIMENT = r"^(tune|promote-[0-9a-f]{1,64})$"
Fraction = Field(ge=-1.0, le=1.0)


class _Shape(BaseModel):
    """Fields dfu relies on are typed; anything else a record carries is kept as it is."""

    model_config = ConfigDict(extra="allow", strict=False, allow_inf_nan=False)


class Metrics(_Shape):
    qwk: float | None = Fraction
    accuracy: float | None = Field(ge=0.0, le=1.0)
    macro_f1: float | None = Field(ge=0.0, le=1.0)


class ValSample(_Shape):
    label: int = Field(ge=0, le=2)
    proba: list[float] = Field(min_length=3, max_length=3)
    sample_id: str


class Artifacts(_Shape):
    reused: list[str] = []
    computed: list[str] = []


class FoldRecord(_Shape):
    """One finished (config, fold seed, fold): `fold_results/*.json` or `confirmations/*.json`."""

    config_id: str = Field(pattern=CONFIG_ID)
    config: dict[str, Any]
    fold: int = Field(ge=0, le=1000)
    fold_seed: int = Field(ge=0, le=2**32 - 1)
    n_folds: int = Field(ge=2, le=1000)
    metrics: Metrics
    meta_qwk: float | None = Fraction
    fusion_gain: float | None = Field(ge=-2.0, le=2.0)
    progress: int = Field(ge=0)
    stages: dict[str, dict[str, Any]]
    val_samples: list[ValSample]
    cohort_fingerprint: str
    fold_fingerprint: str
    params: dict[str, Any] = {}
    artifacts: Artifacts = Artifacts()
    wall_s: float = Field(0.0, ge=0.0)
    compute_s: float = Field(0.0, ge=0.0)
    timing: dict[str, Any] = {}


class PrunedMark(_Shape):
    """A trial the scheduler stopped early (`pruned/*.json`): resume does not run it again."""

    config_id: str = Field(pattern=CONFIG_ID)
    fold_seed: int = Field(ge=0, le=2**32 - 1)
    fold: int = Field(ge=0, le=1000)
    experiment: str = Field(pattern=EXPERIMENT)
    progress: int = Field(ge=0)
    val_qwk: float | None = Fraction
    params: dict[str, Any] = {}
    trial_id: str = ""
    scope: Literal["trial", "config"] = "trial"  # config: every fold of the config stopped


class CvSection(_Shape):
    n_folds: int = Field(ge=2, le=1000)
    seed: int = Field(ge=0, le=2**32 - 1)
    seeds: list[int] | None = Field(None, min_length=1, max_length=1000)


class SearchSection(_Shape):
    algorithm: str = "random"
    num_samples: int = Field(1, ge=1)


class SpecShape(_Shape):
    cv: CvSection
    search: SearchSection = SearchSection()


class ConfigEntry(_Shape):
    config_id: str = Field(pattern=CONFIG_ID)
    params: dict[str, Any]
    config: dict[str, Any] = {}


class Promotion(_Shape):
    experiment: str = Field(pattern=EXPERIMENT)
    configs: list[str]
    fold_seeds: list[int]
    folds: list[int]


class Manifest(_Shape):
    """`sweep.json`: what the sweep is (its file, cohort and folds) and what it planned."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    spec: SpecShape
    data_root: str
    cohort_fingerprint: str
    folds: list[int] = Field(min_length=1)
    configs: list[ConfigEntry]
    promotions: list[Promotion] = []
    baseline: ConfigEntry | None = None  # the study's recipe, run beside the sweep's configs
    # fold seed (as text) -> the fingerprint of the patients' fold assignment under it
    fold_fingerprints: dict[str, str] = {}


class Lease(_Shape):
    """`lease.json`: who writes the sweep now, until when (renewed while it runs)."""

    holder: str
    host: str
    pid: int
    command: str = ""
    acquired: float
    expires: float


def validated(model: type[_Shape], data: Any) -> tuple[dict | None, str | None]:
    """(the data as dfu reads it, None) or (None, the first problem in one short phrase)."""
    try:
        return model.model_validate(data).model_dump(), None
    except ValidationError as exc:
        return None, problem_text(exc)


def problem_text(exc: ValidationError) -> str:
    """The first validation error as `field.path: message` (bounded: it may quote bad input)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the file"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}"[:200] + more

