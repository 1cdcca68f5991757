"""A refitted model as a folder, written and read back without running any code from it.

MODEL/
  config.yaml     the config as exported (`{config_id, config}`: `dfu cv` runs it too)
  model.json      epochs trained, feature columns, class prior, decoder, cohort fingerprint,
                  package versions (written last: a folder without it is incomplete)
  pipeline.skops  the fitted metadata pipeline (skops, no pickle), when the config uses metadata
  weights.pt      state dict of branches and fusion head, when it uses images

Reading trusts nothing in the folder: YAML is read safely, the pipeline is loaded by skops only
if every type it names is on TRUSTED_TYPES (what `build_pipeline` makes), and the weights with
`torch.load(weights_only=True)`. Anything else is one DataError naming the file.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from dfu_train.config import TrialConfig
from dfu_train.errors import ConfigError, DataError
from dfu_train.training.decoding import Decoder
from dfu_train.training.model import build_model
from dfu_train.training.refit import FittedModel

CONFIG_FILE, INFO_FILE = "config.yaml", "model.json"
PIPELINE_FILE, WEIGHTS_FILE = "pipeline.skops", "weights.pt"
# Types skops does not trust by default that a pipeline of `build_pipeline` (resampling steps
# removed) holds; scikit-learn's, NumPy's and builtin types skops trusts itself.
TRUSTED_TYPES = frozenset({
    "dfu_train.metadata.features.add_engineered",
    "imblearn.pipeline.Pipeline",
    "sklearn.tree._tree.Tree",
    "functools.partial",
    "sklearn.feature_selection._mutual_info.mutual_info_classif",
})
INFO_KEYS = ("config_id", "refit_epochs", "feature_columns", "image_modalities", "class_prior",
             "decoder", "cohort_fingerprint", "versions")


def save_model(folder: Path, fitted: FittedModel) -> list[Path]:
    """Write the model folder (refusing one that holds a model already); the files written."""
    import skops.io as sio
    import yaml

    folder = Path(folder)
    if (folder / INFO_FILE).exists():
        raise ConfigError(f"{folder} holds a model already; give an empty or new folder")
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / CONFIG_FILE]
    written[0].write_text(yaml.safe_dump({"config_id": fitted.config.config_id,
                                          "config": fitted.config.to_dict()}, sort_keys=False),
                          encoding="utf-8")
    if fitted.pipeline is not None:
        sio.dump(fitted.pipeline, folder / PIPELINE_FILE)
        written.append(folder / PIPELINE_FILE)
    if fitted.model is not None:
        torch.save(fitted.model.state_dict(), folder / WEIGHTS_FILE)
        written.append(folder / WEIGHTS_FILE)
    (folder / INFO_FILE).write_text(json.dumps(fitted.info, indent=1), encoding="utf-8")
    return [*written, folder / INFO_FILE]


def load_model(folder: Path) -> FittedModel:
    """The model a folder holds, checked file by file; no code from the folder runs."""
    folder = Path(folder)
    if not (folder / INFO_FILE).is_file():
        raise DataError(f"{folder}: not a model folder (no {INFO_FILE}; write one with "
                        "`dfu refit`)")
    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{folder / INFO_FILE}: unreadable ({str(exc)[:200]})") from None
    if not isinstance(info, dict) or any(key not in info for key in INFO_KEYS):
        raise DataError(f"{folder / INFO_FILE}: not a model description dfu wrote")
    config = _config(folder / CONFIG_FILE, info)
    pipeline = _pipeline(folder / PIPELINE_FILE) if config.uses_metadata else None
    model = None
    if config.image_modalities:
        # the architecture only: the weights come from the folder, not from image.pretrained
        model = build_model(config.override({"image.pretrained": "none"}))
        state = _state_dict(folder / WEIGHTS_FILE)
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError) as exc:
            raise DataError(f"{folder / WEIGHTS_FILE}: does not fit the config's model "
                            f"({str(exc).splitlines()[0][:200]})") from None
        model.eval()
    try:
        decoder = Decoder.from_description(info["decoder"])
    except (KeyError, TypeError, ValueError, IndexError):
        raise DataError(f"{folder / INFO_FILE}: unreadable decoder") from None
    return FittedModel(config, pipeline, model, decoder, info)


def _config(path: Path, info: dict) -> TrialConfig:
    from dfu_train.yaml_files import read_yaml

    if not path.is_file():
        raise DataError(f"{path}: missing")
    data = read_yaml(path)
    if not isinstance(data, dict) or "config" not in data:
        raise DataError(f"{path}: not a config dfu wrote")
    try:
        config = TrialConfig.from_dict(data["config"])
    except ConfigError as exc:
        raise DataError(f"{path}: {exc}") from None
    if {data.get("config_id"), info["config_id"]} != {config.config_id}:
        raise DataError(f"{path}: config_id does not match its values ({config.config_id}); "
                        "the folder was edited after refit")
    return config


def _pipeline(path: Path):
    """The pipeline, loaded only when skops finds no type outside TRUSTED_TYPES in the file
    (reading the file's schema runs nothing; a pickle is not a skops file and is refused)."""
    import skops.io as sio

    if not path.is_file():
        raise DataError(f"{path}: missing")
    try:
        untrusted = set(sio.get_untrusted_types(file=path))
    except Exception as exc:  # noqa: BLE001 - zip, JSON and schema errors alike: not skops
        raise DataError(f"{path}: not a skops file ({type(exc).__name__}); refusing to load "
                        "it") from None
    refused = sorted(untrusted - TRUSTED_TYPES)
    if refused:
        raise DataError(f"{path}: holds type {refused[0]!r}, which a dfu pipeline never holds; "
                        "refusing to load it")
    try:
        return sio.load(path, trusted=sorted(untrusted))
    except Exception as exc:  # noqa: BLE001 - whatever skops refuses
        raise DataError(f"{path}: skops refused it ({type(exc).__name__}: "
                        f"{str(exc)[:200]})") from None


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors by name, read with `weights_only=True`; torch's own message is left out, as it
    suggests `weights_only=False`, which would run the file's code."""
    if not path.is_file():
        raise DataError(f"{path}: missing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors alike
        raise DataError(f"{path}: not a state dict torch can read safely "
                        f"({type(exc).__name__}); refusing to load it") from None
    if not (isinstance(state, Mapping) and all(isinstance(k, str) and isinstance(
            v, torch.Tensor) for k, v in state.items())):
        raise DataError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return dict(state)
