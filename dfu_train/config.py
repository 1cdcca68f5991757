"""TrialConfig: the typed, frozen, validated description of one trial, addressed by dotted names.

A config is data: overrides (from a sweep file or the command line) are validated into a new frozen
config, and `config_id` hashes the resolved values, so a re-run of the same config finds its results.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from dfu_train.data import schema
from dfu_train.data.sampling import SAMPLERS
from dfu_train.errors import ConfigError, did_you_mean, quoted
from dfu_train.yaml_files import read_yaml

MAX_SEED = 2**32 - 1  # scikit-learn's and NumPy's legacy seeds stop here
MAX_AUGMENT_VIEWS = 16  # pre-drawn views of stage 1's frozen features (memory: views x rows)
# Which way a parameter makes a config simpler, for the `one_se` selection rule
# (`results.selection`): smaller or larger values (null: no limit, the most complex; a list:
# its length or its sum of widths), or the simplest values in order.
SIMPLER_SMALLER = {"json_schema_extra": {"simpler": "smaller"}}
SIMPLER_LARGER = {"json_schema_extra": {"simpler": "larger"}}
SIMPLER_FALSE = {"json_schema_extra": {"simpler": [False, True]}}


class _Section(BaseModel):
    # inf and nan pass `ge`/`gt` bounds, and no setting means anything with them
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _registered(value: str, registry: Mapping[str, Any], kind: str) -> str:
    """`value` if it names an entry of `registry`, else an error with the closest name."""
    if value not in registry:
        raise ValueError(f"unknown {kind} {quoted(value)}{did_you_mean(value, registry)}; "
                         f"choose from {', '.join(registry)}")
    return value


class MetadataConfig(_Section):
    """The scikit-learn feature pipeline in front of the forest."""

    features: Literal["all"] | tuple[str, ...] = "all"
    engineered: bool = Field(True, description="add BMI and age flags", **SIMPLER_FALSE)
    imputer_neighbors: int = Field(5, ge=1, le=50)
    scale: bool = True
    select_k: int | None = Field(None, ge=1, description="mutual-information selection; null = all",
                                 **SIMPLER_SMALLER)
    sampler: str = Field("none", json_schema_extra={"simpler": ["none"]}, description="imbalanced-learn resampling of the training part's "
                         f"metadata rows, in fit only: {', '.join(SAMPLERS)}")

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
                raise ValueError(f"unknown feature column {quoted(column)}"
                                 f"{did_you_mean(column, schema.FEATURES)}")
        return tuple(value)

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value):
        return _registered(value, SAMPLERS, "sampler")


class ForestConfig(_Section):
    """The random forest on metadata; its probabilities enter fusion untouched."""

    n_estimators: int = Field(300, ge=1, le=5000, **SIMPLER_SMALLER)
    max_depth: int | None = Field(None, ge=1, description="null: no limit", **SIMPLER_SMALLER)
    min_samples_split: int = Field(2, ge=2, description="rows a node needs to be split",
                                   **SIMPLER_LARGER)
    min_samples_leaf: int = Field(1, ge=1, **SIMPLER_LARGER)
    max_features: Literal["sqrt", "log2"] | float = Field(
        "sqrt", description="sqrt, log2 or a share of the features in (0, 1]")
    class_weight: Literal["balanced", "balanced_subsample", "none"] = Field(
        "balanced", description="balanced: n / (classes x class rows), the earlier study's "
        "inverse-frequency weights up to a common factor, which a forest's splits ignore; "
        "balanced_subsample: the same, per bootstrap sample")
    inner_folds: int = Field(5, ge=2, le=20, description="grouped inner folds for OOF probabilities")

    @field_validator("max_features", mode="before")
    @classmethod
    def _share(cls, value):
        """scikit-learn reads a float as the share of features each split draws: only (0, 1]
        is one. Checked before the union, whose errors would name only its first member."""
        if isinstance(value, str) and value in ("sqrt", "log2"):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1:
            return float(value)
        raise ValueError(f"use sqrt, log2 or a share of the features in (0, 1] "
                         f"(got {quoted(value)})")


class ImageConfig(_Section):
    """What every image branch shares: crop size, weights source, augmentation, batch size."""

    size: int = Field(32, ge=8, le=512, description="crops are padded squares of this many pixels")
    pretrained: str = Field("none", description="none, imagenet (downloads) or a state-dict file")
    augment: bool = Field(True, description="training-only flips, rotations, zoom, cutout/noise")
    batch_size: int = Field(32, ge=2, le=4096)
    resize_filter: Literal["bilinear", "nearest", "bicubic", "lanczos", "box", "hamming"] = Field(
        "bilinear", description="PIL filter resizing each crop to `size`")
    flip_p: float = Field(0.5, ge=0, le=1, description="augment: chance of each of the "
                          "horizontal and the vertical flip")
    turn_p: float = Field(1.0, ge=0, le=1, description="augment: chance of a turn by 0-3 "
                          "quarter turns (drawn uniformly)")
    zoom_p: float = Field(1.0, ge=0, le=1, description="augment: chance of a zoom-crop")
    zoom_min: float = Field(0.8, gt=0, le=1, description="augment: zoom-crop scale drawn in "
                            "[zoom_min, 1]")
    cutout_p: float = Field(1.0, ge=0, le=1, description="augment: chance of a cutout square "
                            "(RGB modalities)")
    cutout_share: float = Field(0.25, gt=0, le=1, description="augment: cutout side / size")
    brightness_p: float = Field(1.0, ge=0, le=1, description="augment: chance of a brightness "
                                "shift (map modalities)")
    brightness: float = Field(10.0, ge=0, le=255, description="augment: largest brightness "
                              "shift, 0..255 units")
    noise_p: float = Field(1.0, ge=0, le=1, description="augment: chance of pixel noise (map "
                           "modalities)")
    noise_std: float = Field(3.0, ge=0, le=255, description="augment: noise standard "
                             "deviation, 0..255 units")

    def augmentation(self):
        """The `data.images.Augmentation` these settings describe."""
        from dfu_train.data.images import Augmentation

        return Augmentation(**{name: getattr(self, name) for name in AUGMENT_SETTINGS})


class BranchConfig(_Section):
    """One modality's branch: backbone -> head, and how it is pre-trained on the fold."""

    backbone: str = "simple_cnn"
    head_units: tuple[int, ...] = Field((64,), description="Linear-BatchNorm-ReLU-Dropout widths",
                                        **SIMPLER_SMALLER)
    dropout: float = Field(0.3, ge=0, lt=1)
    pretrain_epochs: int = Field(10, ge=0, le=5000, **SIMPLER_SMALLER)
    pretrain_lr: float = Field(1e-3, gt=0, le=1)
    freeze_backbone: bool = Field(False, description="train only head and classifier in pretraining")
    mixup: bool = Field(False, description="mixup of training crops during pretraining")
    mixup_alpha: float = Field(0.4, gt=0, le=10, description="mixup: the Beta(alpha, alpha) "
                               "of the mixing weight")
    pretrain_top_epochs: int = Field(
        0, ge=0, le=5000, **SIMPLER_SMALLER,
        description="two-phase pretraining: after pretrain_epochs of head and classifier on a "
        "frozen backbone, this many with the top pretrain_unfreeze_pct of the backbone open "
        "(BatchNorm frozen), kept only if better; 0 = one phase (freeze_backbone decides)")
    pretrain_top_lr: float = Field(1e-4, gt=0, le=1, description="two-phase pretraining: the "
                                   "second phase's learning rate")
    pretrain_unfreeze_pct: float = Field(0.2, gt=0, le=1, description="two-phase pretraining: "
                                         "top share of backbone layer groups opened")

    @model_validator(mode="after")
    def _top_after_head(self):
        if self.pretrain_top_epochs and not self.pretrain_epochs:
            raise ValueError("pretrain_top_epochs needs pretrain_epochs > 0 (the first phase "
                             "trains the head on the frozen backbone)")
        return self

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value):
        from dfu_train.models.backbones import BACKBONES

        return _registered(value, BACKBONES, "backbone")

    @field_validator("head_units")
    @classmethod
    def _positive_units(cls, value):
        if any(units < 1 for units in value):
            raise ValueError(f"head widths must be positive (got {list(value)})")
        return tuple(value)


class FusionConfig(_Section):
    """The head that meets the forest's probabilities (untouched) with the image branches."""

    head: str = Field("residual", description="residual starts as exactly the forest")
    projection: int = Field(0, ge=0, description="feature_concat: project image features; 0 = no",
                            **SIMPLER_SMALLER)
    hidden: tuple[int, ...] = Field((), description="hidden widths of the fusion MLP",
                                    **SIMPLER_SMALLER)
    dropout: float = Field(0.0, ge=0, lt=1)
    blend_weight: float = Field(0.3, ge=0, le=1, description="fixed_blend: the image weight")
    residual_bound: float = Field(1.0, gt=0, description="residual: bound of the image correction")

    @field_validator("head")
    @classmethod
    def _known_head(cls, value):
        from dfu_train.models.fusion import FUSION_HEADS

        return _registered(value, FUSION_HEADS, "fusion head")


class Stage1Config(_Section):
    """Fusion with every backbone frozen: heads and the fusion head train."""

    epochs: int = Field(20, ge=0, le=5000, **SIMPLER_SMALLER)
    lr: float = Field(1e-3, gt=0, le=1)
    frozen_features: bool = Field(
        False, description="compute each frozen backbone's features of the fold's crops once "
        "(cached per fold) and train the heads on them: the same metrics when image.augment is "
        "off, many times faster per epoch; with image.augment see augment_views")
    augment_views: int = Field(
        0, ge=0, le=MAX_AUGMENT_VIEWS, **SIMPLER_SMALLER,
        description="with frozen_features and image.augment: augmented views of each training "
        "crop drawn once per fold, one picked per row and epoch; 0 = stage 1 without "
        "augmentation")


class Stage2Config(_Section):
    """Fine-tuning with the top of each backbone open; kept only if it beats stage 1."""

    epochs: int = Field(10, ge=0, le=5000, **SIMPLER_SMALLER)
    lr: float = Field(1e-4, gt=0, le=1)
    unfreeze_pct: float = Field(0.2, gt=0, le=1, description="top share of backbone layer groups")


class LossConfig(_Section):
    """Focal loss, applied once: its alpha is the only class weighting in the neural stages."""

    focal_gamma: float = Field(2.0, ge=0, le=10)
    alpha: Literal["inverse_frequency", "none"] = "inverse_frequency"
    alpha_sum: float = Field(1.0, gt=0, description="the per-class alphas sum to this")
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class OptimConfig(_Section):
    """The one epoch loop's settings, shared by pretraining and both fusion stages."""

    optimizer: Literal["adam", "adamw"] = "adamw"
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 = no clipping")
    early_stop_patience: int = Field(10, ge=1)
    plateau_patience: int = Field(4, ge=1)
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints")


class TrainConfig(_Section):
    """How a trial runs on its device, not what it computes: GPU speed-ups, each a no-op on CPU,
    so they are not part of `config_id`."""

    amp: bool = Field(False, description="bfloat16 autocast of forward passes on CUDA")
    channels_last: bool = Field(False, description="channels-last model and batches on CUDA")
    pin_memory: bool = Field(False, description="page-locked batches copied asynchronously to CUDA")


class CVConfig(_Section):
    """Patient-grouped stratified folds; the same for every trial of a sweep."""

    n_folds: int = Field(5, ge=2, le=20)
    seed: int = Field(42, ge=0, le=MAX_SEED)


def check_modality_names(modalities) -> None:
    """Raise ValueError unless every name is a known modality, each listed once."""
    for modality in modalities:
        if modality not in schema.MODALITIES:
            raise ValueError(f"unknown modality {quoted(modality)}"
                             f"{did_you_mean(modality, schema.MODALITIES)}")
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"a modality is listed twice: {list(modalities)}")


class TrialConfig(_Section):
    """One trial's configuration. `cv` (how it is evaluated) and `train` (how it runs on its
    device) are not part of `config_id`."""

    modalities: tuple[str, ...] = Field(("metadata",), **SIMPLER_SMALLER)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    metadata: MetadataConfig = MetadataConfig()
    forest: ForestConfig = ForestConfig()
    image: ImageConfig = ImageConfig()
    depth_rgb: BranchConfig = BranchConfig()
    depth_map: BranchConfig = BranchConfig()
    thermal_rgb: BranchConfig = BranchConfig()
    thermal_map: BranchConfig = BranchConfig()
    fusion: FusionConfig = FusionConfig()
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    cv: CVConfig = CVConfig()
    decode: Literal["argmax", "expected", "thresholds"] = Field(
        "argmax", description="phase from probabilities for the recorded metrics: argmax, the "
        "expected phase index rounded, or cut at two thresholds fitted on the training part")

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, value):
        value = tuple(value)
        if not value:
            raise ValueError("at least one modality is needed")
        check_modality_names(value)
        return value

    @model_validator(mode="after")
    def _something_trains(self):
        epochs = [self.branch(m).pretrain_epochs for m in self.image_modalities]
        if self.image_modalities and not any([*epochs, self.stage1.epochs, self.stage2.epochs]):
            raise ValueError("image modalities with nothing to train: pretraining, stage1 and "
                             "stage2 all have 0 epochs")
        return self

    @property
    def image_modalities(self) -> tuple[str, ...]:
        return tuple(m for m in self.modalities if m != "metadata")

    @property
    def uses_metadata(self) -> bool:
        return "metadata" in self.modalities

    def branch(self, modality: str) -> BranchConfig:
        return getattr(self, modality)

    def relevant_sections(self) -> tuple[str, ...]:
        """The sections that change what this trial computes: a metadata-only trial ignores the
        image sections, so sweeping them does not multiply identical trials."""
        keep = ["modalities", "seed", "decode"]
        if self.uses_metadata:
            keep += ["metadata", "forest"]
        if self.image_modalities:
            keep += ["image", *self.image_modalities, "stage1", "stage2", "loss", "optim"]
            if self.uses_metadata:
                keep.append("fusion")
        return tuple(keep)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None = None) -> TrialConfig:
        """Validate nested data; every problem becomes one ConfigError naming the dotted key."""
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def identity(self) -> dict[str, Any]:
        """What changes this trial's computation (`acting`), without the settings added later
        that sit at the default computing what came before them (`ADDED_LATER`)."""
        return _without_later_defaults(self.acting())

    def acting(self) -> dict[str, Any]:
        """The sections this trial uses and, within them, only the settings that act: the
        chosen fusion head's own options, the settings of stages that run (pretraining, stage
        1, stage 2 with epochs), never run-time settings (`optim.checkpoint_every`)."""
        data = {k: v for k, v in self.to_dict().items() if k in self.relevant_sections()}
        if "fusion" in data:
            from dfu_train.models.fusion import head_options

            data["fusion"] = {k: data["fusion"][k] for k in ("head", *head_options(self.fusion.head))}
        for stage in ("stage1", "stage2"):
            if stage in data and not data[stage]["epochs"]:
                data[stage] = {"epochs": 0}
        if "augment_views" in data.get("stage1", {}) and not (
                self.stage1.frozen_features and self.image.augment):
            data["stage1"] = {k: v for k, v in data["stage1"].items() if k != "augment_views"}
        if "image" in data and not self.image.augment:
            data["image"] = {k: v for k, v in data["image"].items() if k not in AUGMENT_SETTINGS}
        for modality in self.image_modalities:
            if not self.branch(modality).pretrain_epochs:
                data[modality] = {k: v for k, v in data[modality].items()
                                  if k not in PRETRAINING_ONLY}
                continue
            branch = self.branch(modality)
            ignored = ({"mixup_alpha"} if not branch.mixup else set()) | (
                {"freeze_backbone"} if branch.pretrain_top_epochs else TOP_PHASE_ONLY)
            data[modality] = {k: v for k, v in data[modality].items() if k not in ignored}
        if "optim" in data:
            data["optim"] = {k: v for k, v in data["optim"].items() if k not in RUN_TIME}
        return data

    def used_names(self) -> frozenset[str]:
        """The dotted names in `acting`: parameters this trial uses."""
        return frozenset(f"{section}.{key}" if isinstance(values, dict) else section
                         for section, values in self.acting().items()
                         for key in (values if isinstance(values, dict) else [None]))

    @property
    def config_id(self) -> str:
        """Short hash of `identity` (never `cv` or `train`): all folds of a config share it, and
        values a trial ignores do not change it."""
        return _short_hash(self.identity())

    @property
    def earlier_config_id(self) -> str:
        """The id earlier versions gave this config (every setting of the sections it uses):
        exports and sweep folders they wrote carry it."""
        return _short_hash(_without_later_defaults(
            {k: v for k, v in self.to_dict().items() if k in self.relevant_sections()}))

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


PRETRAINING_ONLY = frozenset({"pretrain_lr", "mixup", "mixup_alpha", "freeze_backbone",
                              "pretrain_top_epochs", "pretrain_top_lr", "pretrain_unfreeze_pct"})
TOP_PHASE_ONLY = frozenset({"pretrain_top_lr", "pretrain_unfreeze_pct"})
# The image settings that act only with `image.augment`.
AUGMENT_SETTINGS = ("flip_p", "turn_p", "zoom_p", "zoom_min", "cutout_p", "cutout_share",
                    "brightness_p", "brightness", "noise_p", "noise_std")
RUN_TIME = frozenset({"checkpoint_every"})
# Settings added after sweeps were recorded, with the default that computes what the version
# before them computed: at that default they are left out of `config_id`, so recorded sweeps,
# exports and cached artifacts keep their ids.
ADDED_LATER: dict[str, Any] = {
    "forest.min_samples_split": 2, "decode": "argmax",
    "stage1.frozen_features": False, "stage1.augment_views": 0,
    "image.resize_filter": "bilinear",
    **{f"image.{name}": ImageConfig.model_fields[name].default for name in AUGMENT_SETTINGS},
    **{f"{modality}.{name}": BranchConfig.model_fields[name].default
       for modality in schema.IMAGE_MODALITIES
       for name in ("mixup_alpha", "pretrain_top_epochs", "pretrain_top_lr",
                    "pretrain_unfreeze_pct")},
}


def _without_later_defaults(data: dict[str, Any]) -> dict[str, Any]:
    for dotted, default in ADDED_LATER.items():
        section, _, key = dotted.partition(".")
        if key and isinstance(data.get(section), dict) and data[section].get(key, default) == default:
            data[section] = {k: v for k, v in data[section].items() if k != key}
        elif not key and section in data and data[section] == default:
            del data[section]
    return data


def _short_hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def simpler_direction(dotted: str) -> str | list | None:
    """How `dotted` makes a config simpler ("smaller", "larger", or values simplest first);
    None when the schema does not say."""
    if dotted not in TrialConfig.dotted_names():
        return None
    section, _, key = dotted.partition(".")
    field = TrialConfig.model_fields[section]
    if key:
        field = field.annotation.model_fields[key]
    return (field.json_schema_extra or {}).get("simpler")


def _split(dotted: str) -> list[str]:
    if dotted not in TrialConfig.dotted_names():
        raise ConfigError(f"unknown parameter {quoted(dotted)}"
                          f"{did_you_mean(dotted, TrialConfig.dotted_names())}")
    return dotted.split(".")


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = ".".join(str(p) for p in error["loc"] if not isinstance(p, int))
    if error["type"] == "extra_forbidden":
        return f"unknown parameter {quoted(key)}{did_you_mean(key, TrialConfig.dotted_names())}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] != "value_error" and "input" in error:
        message += f" (got {quoted(error['input'])})"
    return f"{key}: {message}" if key else message


def check_runnable(configs: Iterable[TrialConfig]) -> None:
    """What the libraries would refuse at run time, refused before any work: the metadata
    pipeline's parameters against scikit-learn's and imbalanced-learn's own constraints, and
    each `image.pretrained` file as a state dict torch loads without running pickled code.
    Too slow for every validation (imports, reading weights): planning and
    `load_trial_config` call it, each distinct section once."""
    configs = list(configs)
    pipelines = dict.fromkeys((c.metadata, c.forest) for c in configs if c.uses_metadata)
    weights = dict.fromkeys(c.image.pretrained for c in configs if c.image_modalities)
    if pipelines:
        from dfu_train.metadata.features import check_parameters

        for metadata, forest in pipelines:
            check_parameters(metadata, forest)
    if set(weights) - {"none", "imagenet"}:
        from dfu_train.models.backbones import check_weights

        for source in weights:
            check_weights(source)


# The earlier study's plain metadata recipe: a random forest with inverse-frequency class
# weights on KNN-imputed, scaled metadata, no resampling, no selection. Sweeps run it beside
# their configs (`baseline`), so a leaderboard always shows whether the search beat it.
STUDY_RECIPE: dict[str, Any] = {
    "modalities": ["metadata"], "metadata.imputer_neighbors": 5, "metadata.scale": True,
    "metadata.select_k": None, "metadata.sampler": "none", "forest.n_estimators": 300,
    "forest.max_depth": None, "forest.min_samples_leaf": 1, "forest.max_features": "sqrt",
    "forest.class_weight": "balanced", "decode": "argmax"}


def study_recipe(base: TrialConfig | None = None) -> TrialConfig:
    """The study's recipe on top of `base` (its folds, seed, inner folds and feature list)."""
    return (base or TrialConfig()).override(STUDY_RECIPE)


def load_trial_config(path: str) -> TrialConfig:
    """A config file: `default`, `baseline` (the study's recipe), a YAML/JSON TrialConfig
    mapping, or an exported best config (`{config_id, config}`), whose id must still match its
    values."""
    if path == "default":
        return TrialConfig()
    if path == "baseline":
        return study_recipe()
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: config file not found (or pass `default`)")
    data = read_yaml(file) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: a config file is a mapping")
    expected = data.get("config_id")
    try:
        config = TrialConfig.from_dict(data["config"] if "config" in data else data)
        check_runnable([config])
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    if expected is not None and expected not in (config.config_id, config.earlier_config_id):
        raise ConfigError(f"{file}: config_id {expected} does not match its values "
                          f"({config.config_id}); the file was edited after export")
    return config
