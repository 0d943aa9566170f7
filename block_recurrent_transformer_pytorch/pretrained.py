"""Shareable weights: ``model.save_pretrained(dir)`` and ``BlockRecurrentTransformer.from_pretrained(dir)``.

A directory holds ``model.safetensors`` (the weights) and ``config.json`` (the model's
``config.to_dict()`` plus ``format_version``): the file names of huggingface_hub's
``PyTorchModelHubMixin``, so ``huggingface_hub.upload_folder(repo_id=..., folder_path=dir)`` publishes
one and ``snapshot_download`` fetches one back. Nothing here touches the network. safetensors is
an optional dependency: ``pip install "block-recurrent-transformer-pytorch[hub]"``.

Weights are written with ``safetensors.torch.save_model``, which writes a tensor that shares storage
with another once (safetensors refuses shared storage) and ``load_model`` re-ties it; the model has
no tied weights today (token embedding and output projection are separate), but a subclass or a
future option may.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from .transformer import BlockRecurrentTransformer

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


class PretrainedError(ValueError):
    """A saved model that cannot be loaded: a missing, damaged or mismatched file (named in the message)."""


def _safetensors():
    try:
        import safetensors.torch
    except ImportError:
        raise ImportError('save_pretrained/from_pretrained need safetensors: pip install '
                          '"block-recurrent-transformer-pytorch[hub]" (or pip install safetensors)') from None
    return safetensors.torch


def save_pretrained(model: "BlockRecurrentTransformer", directory: Union[str, Path]) -> Path:
    """Write model.safetensors and config.json into directory (created if needed); returns it."""
    st = _safetensors()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {**model.config.to_dict(), "format_version": FORMAT_VERSION}
    st.save_model(model, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "format_version": str(FORMAT_VERSION)})
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def read_config(directory: Union[str, Path]) -> dict:
    """The model config saved in directory/config.json (without format_version), checked to be one."""
    from .config import BlockRecurrentConfig

    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise PretrainedError(f"{path}: no such file (save_pretrained writes it with {WEIGHTS_NAME})")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PretrainedError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise PretrainedError(f"{path}: expected a JSON object, got {type(config).__name__}")
    version = config.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise PretrainedError(f"{path}: format_version {version!r}, this version of the library reads {FORMAT_VERSION}")
    try:
        BlockRecurrentConfig(**config)
    except (TypeError, ValueError) as error:
        raise PretrainedError(f"{path}: not a valid model config ({error})") from None
    return config


def load_weights(model: "BlockRecurrentTransformer", directory: Union[str, Path]) -> None:
    """Load directory/model.safetensors into model (strict: every tensor present, each of its shape)."""
    st = _safetensors()
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise PretrainedError(f"{path}: no such file")
    try:
        missing, unexpected = st.load_model(model, str(path), strict=False, device=str(model.device))
    except Exception as error:  # safetensors raises SafetensorError, OSError or RuntimeError (shapes)
        raise PretrainedError(f"{path}: cannot load the weights ({error})") from None
    if missing or unexpected:
        raise PretrainedError(f"{path}: does not match the model of {CONFIG_NAME}: missing {sorted(missing)}, "
                              f"unexpected {sorted(unexpected)}")


def from_pretrained(cls, directory: Union[str, Path], **options) -> "BlockRecurrentTransformer":
    """The model saved in directory by save_pretrained (on CPU, fp32 as saved); options as from_config's."""
    model = cls.from_config(read_config(directory), **options)
    load_weights(model, directory)
    return model
