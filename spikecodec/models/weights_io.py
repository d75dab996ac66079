"""Reading and writing model weights as safetensors (never pickle: loading must not run code).

Every file carries its model kind and configuration as JSON in the safetensors metadata, so a
weights file says what it is; the registry still holds the authoritative config and checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file


def sha256_of_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, kind: str, config: dict[str, Any],
    extra: dict[str, str] | None = None,
) -> str:
    """Write tensors atomically (temporary file, then rename); returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"kind": kind, "config": json.dumps(config, sort_keys=True)}
    metadata.update(extra or {})
    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    temporary = path.with_name(path.name + ".tmp")
    save_file(contiguous, str(temporary), metadata=metadata)
    os.replace(temporary, path)
    return sha256_of_file(path)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata dictionary of a safetensors file (ValueError when it is not one)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from error


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file."""
    metadata = read_metadata(path)
    try:
        return load_file(str(path)), metadata
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from error


def config_of(metadata: dict[str, str], path: str | os.PathLike) -> dict[str, Any]:
    """The JSON config stored in a weights file's metadata."""
    if "config" not in metadata:
        raise ValueError(f"{path} holds no model config in its metadata")
    return json.loads(metadata["config"])


def subset(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Tensors whose name starts with ``prefix``, the prefix removed."""
    return {name[len(prefix):]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict (strict) with an error message naming missing and unexpected keys."""
    try:
        result = module.load_state_dict(tensors, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{what}: weights do not match the model: {error}") from error
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{what}: weights do not match the model (missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]})"
        )


__all__ = [
    "config_of", "load_state", "load_weights", "read_metadata", "save_weights", "sha256_of_file", "subset",
]
