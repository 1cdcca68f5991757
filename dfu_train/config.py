"""TrialConfig: the typed, frozen, validated description of one trial, addressed by dotted names.

A config is data: overrides (from a sweep file or the command line) are validated into a new frozen
config, and `config_id` hashes the resolved values, so a re-run of the same config finds its results.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dfu_train.data import schema
from dfu_train.data.sampling import SAMPLERS
from dfu_train.errors import ConfigError, did_you_mean

#: sections that say how a config is evaluated, not what it is: left out of `config_id`
EVALUATION_SECTIONS = ("cv",)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MetadataConfig(_Section):
    """The scikit-learn feature pipeline in front of the forest."""

    features: Literal["all"] | tuple[str, ...] = "all"
    engineered: bool = Field(True, description="add BMI and age flags")
    imputer_neighbors: int = Field(5, ge=1, le=50)
    scale: bool = True
    select_k: int | None = Field(None, ge=1, description="mutual-information selection; null = all")
    sampler: str = Field("none", description="imbalanced-learn resampling of metadata rows")

    @field_validator("features")
    @classmethod
    def _no_leakage(cls, value):
        if value == "all":
            return value
        if not value:
            raise ValueError("the feature list is empty; use 'all' or name columns")
        for column in value:
            if column in schema.NEVER_FEATURES:
                raise ValueError(f"{column!r} is an identifier, the label, a label proxy or a "
                                 "treatment decision: it leaks the phase and is never a feature")
            if column not in schema.FEATURES:
                raise ValueError(f"unknown feature column {column!r}"
                                 f"{did_you_mean(column, schema.FEATURES)}")
        return tuple(value)

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value):
        if value not in SAMPLERS:
            raise ValueError(f"unknown sampler {value!r}{did_you_mean(value, SAMPLERS)}; "
                             f"choose from {', '.join(SAMPLERS)}")
        return value


class ForestConfig(_Section):
    """The random forest on metadata; its probabilities enter fusion untouched."""

    n_estimators: int = Field(300, ge=1, le=5000)
    max_depth: int | None = Field(None, ge=1)
    min_samples_leaf: int = Field(1, ge=1)
    max_features: Literal["sqrt", "log2"] | float = "sqrt"
    class_weight: Literal["balanced", "none"] = "balanced"
    inner_folds: int = Field(5, ge=2, le=20, description="grouped inner folds for OOF probabilities")


class CVConfig(_Section):
    """Patient-grouped stratified folds; the same for every trial of a sweep."""

    n_folds: int = Field(5, ge=2, le=20)
    seed: int = 42


class TrialConfig(_Section):
    """One trial's configuration. `cv` says how it is evaluated and is not part of `config_id`."""

    modalities: tuple[str, ...] = ("metadata",)
    seed: int = Field(0, ge=0)
    metadata: MetadataConfig = MetadataConfig()
    forest: ForestConfig = ForestConfig()
    cv: CVConfig = CVConfig()

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, value):
        value = tuple(value)
        if not value:
            raise ValueError("at least one modality is needed")
        for modality in value:
            if modality not in schema.MODALITIES:
                raise ValueError(f"unknown modality {modality!r}"
                                 f"{did_you_mean(modality, schema.MODALITIES)}")
        if value != ("metadata",):
            raise ValueError("this version trains the metadata branch only; image modalities "
                             f"{[m for m in value if m != 'metadata']} are not available yet")
        return value

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None = None) -> TrialConfig:
        """Validate nested data; every problem becomes one ConfigError naming the dotted key."""
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def config_id(self) -> str:
        """Short hash of the resolved config (without `cv`): all folds of a config share it."""
        data = {k: v for k, v in self.to_dict().items() if k not in EVALUATION_SECTIONS}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]

    def get(self, dotted: str) -> Any:
        node: Any = self
        for part in _split(dotted):
            node = getattr(node, part)
        return node

    def override(self, values: Mapping[str, Any]) -> TrialConfig:
        """A new validated config with dotted-name values replaced."""
        data = self.to_dict()
        for dotted, value in values.items():
            parts = _split(dotted)
            node = data
            for part in parts[:-1]:
                node = node[part]
            node[parts[-1]] = value
        return TrialConfig.from_dict(data)

    @classmethod
    def dotted_names(cls) -> tuple[str, ...]:
        """Every leaf parameter name, e.g. 'forest.n_estimators'."""
        names = []
        for name, field in cls.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, _Section):
                names.extend(f"{name}.{sub}" for sub in annotation.model_fields)
            else:
                names.append(name)
        return tuple(names)


def _split(dotted: str) -> list[str]:
    if dotted not in TrialConfig.dotted_names():
        raise ConfigError(f"unknown parameter {dotted!r}"
                          f"{did_you_mean(dotted, TrialConfig.dotted_names())}")
    return dotted.split(".")


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = ".".join(str(p) for p in error["loc"] if not isinstance(p, int))
    if error["type"] == "extra_forbidden":
        return f"unknown parameter {key!r}{did_you_mean(key, TrialConfig.dotted_names())}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] != "value_error" and "input" in error:
        message += f" (got {error['input']!r})"
    return f"{key}: {message}"


def load_trial_config(path: str) -> TrialConfig:
    """A config file: `default`, a YAML/JSON TrialConfig mapping, or an exported best config
    (`{config_id, config}`), whose id must still match its values."""
    if path == "default":
        return TrialConfig()
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: config file not found (or pass `default`)")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML/JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: a config file is a mapping")
    expected = data.get("config_id")
    try:
        config = TrialConfig.from_dict(data["config"] if "config" in data else data)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    if expected is not None and expected != config.config_id:
        raise ConfigError(f"{file}: config_id {expected} does not match its values "
                          f"({config.config_id}); the file was edited after export")
    return config
