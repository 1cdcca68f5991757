"""One unfitted pipeline from metadata columns to forest probabilities.

The ColumnTransformer selects an explicit allow-list with remainder="drop", so leakage columns
cannot reach the forest even when the table holds them. Everything is fitted by `fit` on the fold's
training rows; imbalanced-learn's Pipeline resamples during fit only.
"""

from __future__ import annotations

import re
from functools import partial

import numpy as np
import pandas as pd
from imblearn.pipeline import Pipeline
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import SelectKBest, mutual_info_classif
from sklearn.impute import KNNImputer
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder, StandardScaler

from dfu_train.config import ForestConfig, MetadataConfig
from dfu_train.data import schema
from dfu_train.data.sampling import STEP_NAMES, sampler_steps
from dfu_train.errors import ConfigError, DataError

BMI = "BMI (engineered)"
AGE_FLAGS = {"Age >= 65 (engineered)": 65, "Age >= 75 (engineered)": 75}
ENGINEERED = (BMI, *AGE_FLAGS)


def add_engineered(table: pd.DataFrame) -> pd.DataFrame:
    """Row-wise features (no statistics of other rows, so nothing to fit)."""
    out = table.copy()
    height_m = pd.to_numeric(out.get("Height (cm)"), errors="coerce") / 100
    out[BMI] = pd.to_numeric(out.get("Weight (Kg)"), errors="coerce") / height_m**2
    age = pd.to_numeric(out.get("Age"), errors="coerce")
    for name, threshold in AGE_FLAGS.items():
        out[name] = (age >= threshold).astype(float).where(age.notna())
    return out


def feature_columns(config: MetadataConfig, available) -> tuple[list[str], list[str]]:
    """(numeric, categorical) columns the pipeline reads, checked against the cohort's table."""
    requested = schema.FEATURES if config.features == "all" else config.features
    if config.features != "all":
        missing = [c for c in requested if c not in available]
        if missing:
            raise DataError(f"metadata.features names {missing[0]!r}, absent from the cohort's "
                            "metadata CSV")
    present = [c for c in requested if c in available]
    numeric = [c for c in present if c not in schema.CATEGORIES]
    if config.engineered:
        numeric += list(ENGINEERED)
    categorical = [c for c in present if c in schema.CATEGORIES]
    if not numeric and not categorical:
        raise DataError("the cohort has none of the requested feature columns")
    return numeric, categorical


def build_pipeline(metadata: MetadataConfig, forest: ForestConfig, *, columns, seed: int,
                   n_jobs: int = 1) -> Pipeline:
    """The unfitted pipeline: engineered -> encode -> impute -> scale -> select -> resample -> RF."""
    numeric, categorical = feature_columns(metadata, columns)
    encode = ColumnTransformer(
        [
            ("numeric", "passthrough", numeric),
            ("categorical", OrdinalEncoder(
                categories=[list(schema.CATEGORIES[c]) for c in categorical],
                handle_unknown="use_encoded_value", unknown_value=np.nan,
                encoded_missing_value=np.nan), categorical),
        ],
        remainder="drop",
    )
    n_features = len(numeric) + len(categorical)
    steps = [
        ("engineered", FunctionTransformer(add_engineered if metadata.engineered else None)),
        ("encode", encode),
        ("impute", KNNImputer(n_neighbors=metadata.imputer_neighbors, keep_empty_features=True)),
    ]
    if metadata.scale:
        steps.append(("scale", StandardScaler()))
    if metadata.select_k is not None and metadata.select_k < n_features:
        score = partial(mutual_info_classif, random_state=seed)
        steps.append(("select", SelectKBest(score, k=metadata.select_k)))
    steps += sampler_steps(metadata.sampler, seed=seed)  # samplers act in fit only
    steps.append(("forest", RandomForestClassifier(
        n_estimators=forest.n_estimators, max_depth=forest.max_depth,
        min_samples_split=forest.min_samples_split, min_samples_leaf=forest.min_samples_leaf,
        max_features=forest.max_features,
        class_weight=None if forest.class_weight == "none" else forest.class_weight,
        random_state=seed, n_jobs=n_jobs)))
    return Pipeline(steps)


# pipeline step parameters that a config key sets under another name
_CONFIG_KEYS = {("impute", "n_neighbors"): "metadata.imputer_neighbors",
                ("select", "k"): "metadata.select_k",
                **{(step, None): "metadata.sampler" for step in STEP_NAMES}}


def check_parameters(metadata: MetadataConfig, forest: ForestConfig) -> None:
    """Refuse, before any fold runs, what scikit-learn or imbalanced-learn would refuse when
    fitting: every step's parameters checked against the library's own constraints (what
    `fit` checks first), with the config key that set them."""
    pipeline = build_pipeline(metadata, forest, columns=schema.FEATURES, seed=0)
    for name, step in pipeline.steps:
        try:
            step._validate_params()
        except ValueError as exc:  # sklearn's InvalidParameterError
            param = re.match(r"The '(\w+)' parameter", str(exc))
            param = param and param.group(1)
            key = _CONFIG_KEYS.get((name, param)) or _CONFIG_KEYS.get((name, None)) or (
                f"forest.{param}" if name == "forest" else f"metadata ({name} step)")
            raise ConfigError(f"{key}: {exc}") from None
