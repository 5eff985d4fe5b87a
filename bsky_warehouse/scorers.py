"""Offline toxicity scorers: no network and no downloads at run time, so a backfill costs no quota.

* `ProfanityCheckScorer` (`profanity-check`, the default) wraps alt-profanity-check, a linear SVM over
  character/word n-grams that ships its own trained model. It is fast (thousands of posts a second) and on
  the 361 reference posts agrees with Perspective TOXICITY at Spearman 0.54, Pearson 0.76, AUC 0.95.
* `DetoxifyScorer` (`detoxify`, extra `[detoxify]`) runs a Detoxify checkpoint (a BERT/RoBERTa multi-label
  classifier) that the operator has put on disk; torch and transformers are imported only when it is built.
* `DistilledScorer` (`perspective-distilled`) applies a stored distilled Perspective model (distill.py) to the
  posts' stored embeddings and cheap text features; it never embeds, so it needs `post_embeddings` first.

All follow the `Scorer` protocol: one `ScoreResult` per post, in input order, reported after each batch so
the asset can checkpoint it before the next batch is computed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bsky_warehouse.records import PostText, Scorer, ScoreResult
from bsky_warehouse.settings import DETOXIFY_CHECKPOINT, DETOXIFY_TOKENIZER

# Same reason string as the Perspective client, so skipped rows read alike whichever scorer wrote them.
REASON_TEXT_TOO_SHORT = "text_too_short"
DEFAULT_BATCH_SIZE = 512


def _batches(items: Sequence[PostText], size: int) -> Iterator[Sequence[PostText]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _too_short(text: str, min_text_length: int) -> bool:
    """Stripped-length check, the rule the Perspective client applies; empty text is never scored."""
    return len(text.strip()) < max(min_text_length, 1)


def _score_in_batches(
    posts: Sequence[PostText],
    on_result: Callable[[ScoreResult], None],
    *,
    batch_size: int,
    min_text_length: int,
    predict: Callable[[list[str]], list[dict[str, float]]],
) -> None:
    """Score `posts` batch by batch, reporting every post of a batch (in input order) once it is done.

    Too-short texts never reach the model, but they are reported in their place in the batch so the
    callback always sees the posts in the order given.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    for batch in _batches(posts, batch_size):
        scorable = [post.text for post in batch if not _too_short(post.text, min_text_length)]
        predictions = iter(predict(scorable) if scorable else [])
        for post in batch:
            if _too_short(post.text, min_text_length):
                on_result(ScoreResult(uri=post.uri, status="skipped", reason=REASON_TEXT_TOO_SHORT))
            else:
                on_result(ScoreResult(uri=post.uri, status="ok", probs=next(predictions)))


# --------------------------------------------------------------------------------------------------
# alt-profanity-check
# --------------------------------------------------------------------------------------------------


class ProfanityCheckScorer:
    """alt-profanity-check's `predict_prob`, stored as `prob_toxicity` only.

    The model was trained on Wikipedia talk-page comments labelled for any of toxic, severe toxic, obscene,
    threat, insult or identity hate, plus tweets labelled offensive: its output is a general
    offensiveness probability, closest to Perspective TOXICITY. Writing the same number into
    `prob_profanity` as well would present one measurement as two and make the PROFANITY agreement figures
    meaningless, so that column stays NULL.
    """

    name = "profanity-check"

    def __init__(self, batch_size: int = DEFAULT_BATCH_SIZE, min_text_length: int = 1) -> None:
        from profanity_check import predict_prob  # loads the pickled model: only when this scorer is built

        self._predict_prob = predict_prob
        self.batch_size = batch_size
        self.min_text_length = min_text_length
        # The package pins its scikit-learn version and ships the model, so its version fixes the outputs.
        self.version = f"alt-profanity-check-{importlib.metadata.version('alt-profanity-check')}"

    def predict(self, texts: list[str]) -> list[dict[str, float]]:
        """Probabilities for non-empty texts, one dict per text."""
        return [{"prob_toxicity": float(p)} for p in self._predict_prob(texts)]

    def score(self, posts: Sequence[PostText], on_result: Callable[[ScoreResult], None]) -> None:
        _score_in_batches(
            posts, on_result, batch_size=self.batch_size, min_text_length=self.min_text_length, predict=self.predict
        )


# --------------------------------------------------------------------------------------------------
# Detoxify checkpoints (optional extra)
# --------------------------------------------------------------------------------------------------

# Detoxify's label names (both the Jigsaw 2018 spellings of the "original" model and the standardised ones
# of "unbiased"/"multilingual") -> `toxicity_scores` columns. Identity-group outputs of the unbiased model
# (male, female, muslim, ...) say whom a comment mentions, not how toxic it is: they have no column.
DETOXIFY_LABEL_COLUMNS: Mapping[str, str] = {
    "toxicity": "prob_toxicity",
    "toxic": "prob_toxicity",
    "severe_toxicity": "prob_severe_toxicity",
    "severe_toxic": "prob_severe_toxicity",
    "obscene": "prob_profanity",
    "threat": "prob_threat",
    "insult": "prob_insult",
    "identity_attack": "prob_identity_attack",
    "identity_hate": "prob_identity_attack",
    "sexual_explicit": "prob_sexually_explicit",
}
DETOXIFY_INSTALL_HINT = "the detoxify scorer needs torch and transformers: pip install 'bsky-warehouse[detoxify]'"


def detoxify_column(label: str) -> str | None:
    """The `prob_*` column for a Detoxify label, or None for labels with no column."""
    return DETOXIFY_LABEL_COLUMNS.get(label.strip().lower())


def map_detoxify_scores(labels: Sequence[str], probs: Sequence[float]) -> dict[str, float]:
    """One post's sigmoid outputs, positionally matched to `labels`, as `prob_*` columns.

    `probs` may be longer than `labels`: the unbiased model has 16 outputs but its checkpoint names only the
    7 toxicity classes first (the identity outputs follow), exactly as Detoxify itself reads them.
    """
    if len(probs) < len(labels):
        raise ValueError(f"{len(labels)} labels but only {len(probs)} outputs")
    out: dict[str, float] = {}
    for label, prob in zip(labels, probs, strict=False):
        column = detoxify_column(label)
        if column is not None:
            if column in out:
                raise ValueError(f"labels map twice onto {column}: {list(labels)}")
            out[column] = float(prob)
    return out


def _file_digest(paths: Sequence[Path]) -> str:
    """sha256 over the files' names and bytes: a new checkpoint or tokenizer means new outputs."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _strip_lightning_prefix(state_dict: Mapping[str, Any], model_keys: set[str]) -> dict[str, Any]:
    """Detoxify's training wraps the HF model as `self.model`, so raw Lightning checkpoints prefix `model.`."""
    if model_keys & set(state_dict):
        return dict(state_dict)
    if state_dict and all(key.startswith("model.") for key in state_dict):
        return {key[len("model.") :]: value for key, value in state_dict.items()}
    return dict(state_dict)


class DetoxifyScorer:
    """A Detoxify checkpoint scored with transformers on CPU (or `device`), never downloading anything.

    `checkpoint_path` is a Detoxify `.ckpt` (a dict with `state_dict` and `config`, where
    `config.arch.args` names the transformers model and tokenizer classes and `config.dataset.args.classes`
    the labels). `tokenizer_path` is a directory holding the base model's `config.json` and tokenizer files
    (what Detoxify calls `huggingface_config_path`); it defaults to the checkpoint's directory. Both default
    to the `DETOXIFY_CHECKPOINT` / `DETOXIFY_TOKENIZER` environment variables. Detoxify's released
    checkpoints hold only tensors and plain containers and load as they are; `trust_checkpoint=True`
    allows a full pickle (e.g. a raw Lightning checkpoint) from a source you trust.
    """

    name = "detoxify"

    def __init__(
        self,
        checkpoint_path: str | os.PathLike[str] | None = None,
        tokenizer_path: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 32,
        max_length: int = 512,
        min_text_length: int = 1,
        device: str = "cpu",
        trust_checkpoint: bool = False,
    ) -> None:
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise ImportError(DETOXIFY_INSTALL_HINT) from exc

        checkpoint = checkpoint_path or DETOXIFY_CHECKPOINT.get()
        if not checkpoint:
            raise ValueError(f"the detoxify scorer needs checkpoint_path or the {DETOXIFY_CHECKPOINT.name} variable")
        self.checkpoint_path = Path(checkpoint)
        if not self.checkpoint_path.is_file():
            raise FileNotFoundError(f"Detoxify checkpoint not found: {self.checkpoint_path}")
        tokenizer_dir = tokenizer_path or DETOXIFY_TOKENIZER.get() or self.checkpoint_path.parent
        self.tokenizer_path = Path(tokenizer_dir)
        if not (self.tokenizer_path / "config.json").is_file():
            raise FileNotFoundError(
                f"{self.tokenizer_path} needs the base model's config.json and tokenizer files "
                "(save them with save_pretrained where the network is reachable)"
            )
        self.batch_size = batch_size
        self.min_text_length = min_text_length
        self.device = device
        self._torch = torch

        # A checkpoint is a pickle: unpickle tensors and plain containers only, unless the operator vouches
        # for the file (full Lightning checkpoints carry other objects).
        loaded = torch.load(self.checkpoint_path, map_location="cpu", weights_only=not trust_checkpoint)
        if not isinstance(loaded, dict) or "state_dict" not in loaded or "config" not in loaded:
            raise ValueError(f"{self.checkpoint_path} is not a Detoxify checkpoint (needs state_dict and config)")
        arch = loaded["config"]["arch"]["args"]
        self.labels: list[str] = list(loaded["config"]["dataset"]["args"]["classes"])

        model_name = arch["model_name"]
        if not model_name.endswith("ForSequenceClassification"):
            raise ValueError(f"unsupported Detoxify model class {model_name!r}")
        model_class = getattr(transformers, model_name)
        config = transformers.AutoConfig.from_pretrained(self.tokenizer_path, local_files_only=True)
        config.num_labels = int(arch["num_classes"])
        self.model = model_class(config)
        state_dict = _strip_lightning_prefix(loaded["state_dict"], set(self.model.state_dict()))
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        # Older checkpoints carry `position_ids` buffers that newer transformers no longer persist.
        unexpected = [key for key in unexpected if not key.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(
                f"{self.checkpoint_path} does not fit {model_name}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        if len(self.labels) > config.num_labels:
            raise ValueError(f"{len(self.labels)} labels for a model with {config.num_labels} outputs")
        self.model.to(device).eval()

        tokenizer_class = getattr(transformers, arch.get("tokenizer_name") or "AutoTokenizer")
        self.tokenizer = tokenizer_class.from_pretrained(self.tokenizer_path, local_files_only=True)
        # RoBERTa-style position ids start after the padding index, so two positions are unusable.
        offset = 2 if config.model_type in {"roberta", "xlm-roberta", "camembert"} else 0
        self.max_length = min(max_length, config.max_position_embeddings - offset)

        tokenizer_files = [p for p in self.tokenizer_path.iterdir() if p.is_file() and p != self.checkpoint_path]
        digest = _file_digest([self.checkpoint_path, *tokenizer_files])[:12]
        self.version = f"{self.checkpoint_path.stem}-{digest}-max{self.max_length}"

    def predict(self, texts: list[str]) -> list[dict[str, float]]:
        """Sigmoid over the logits of one padded batch, mapped to `prob_*` columns."""
        torch = self._torch
        inputs = self.tokenizer(
            texts, return_tensors="pt", truncation=True, padding=True, max_length=self.max_length
        ).to(self.device)
        with torch.inference_mode():
            probs = torch.sigmoid(self.model(**inputs).logits).float().cpu().tolist()
        return [map_detoxify_scores(self.labels, row) for row in probs]

    def score(self, posts: Sequence[PostText], on_result: Callable[[ScoreResult], None]) -> None:
        _score_in_batches(
            posts, on_result, batch_size=self.batch_size, min_text_length=self.min_text_length, predict=self.predict
        )


# --------------------------------------------------------------------------------------------------
# The distilled Perspective model
# --------------------------------------------------------------------------------------------------


class DistilledScorer:
    """Every attribute of a stored `DistilledModel`, `version` = its model version.

    `embeddings(uris)` returns the stored embedding of those uris that have one. A post without one gets no
    row at all (counted in the returned stats): the asset then scores it on a later run, once post_embeddings
    has embedded it, where a `skipped` row would count as done. Embeddings are computed once per post by
    post_embeddings and shared with topics; this scorer never computes one.
    """

    name = "perspective-distilled"

    def __init__(
        self,
        model: Any,
        embeddings: Callable[[list[str]], Mapping[str, Any]],
        batch_size: int = 4096,
        min_text_length: int = 1,
    ) -> None:
        self.model = model
        self.version = model.version
        self._embeddings = embeddings
        self.batch_size = batch_size
        self.min_text_length = min_text_length

    def score(self, posts: Sequence[PostText], on_result: Callable[[ScoreResult], None]) -> dict[str, int]:
        import numpy as np

        from bsky_warehouse.distill import text_features

        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        without = 0
        for batch in _batches(posts, self.batch_size):
            scorable = [post for post in batch if not _too_short(post.text, self.min_text_length)]
            found = self._embeddings([post.uri for post in scorable])
            embedded = [post for post in scorable if post.uri in found]
            without += len(scorable) - len(embedded)
            probs: dict[str, Any] = {}
            if embedded:
                vectors = np.stack([found[post.uri] for post in embedded])
                probs = self.model.predict(vectors, text_features([post.text for post in embedded]))
            row = {post.uri: i for i, post in enumerate(embedded)}
            for post in batch:
                if _too_short(post.text, self.min_text_length):
                    on_result(ScoreResult(uri=post.uri, status="skipped", reason=REASON_TEXT_TOO_SHORT))
                elif post.uri in row:
                    i = row[post.uri]
                    on_result(ScoreResult(post.uri, "ok", probs={c: float(p[i]) for c, p in probs.items()}))
        return {"without_embedding": without}


# --------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------

OFFLINE_SCORERS: Mapping[str, type] = {
    ProfanityCheckScorer.name: ProfanityCheckScorer,
    DetoxifyScorer.name: DetoxifyScorer,
}


def make_scorer(name: str, **options: Any) -> Scorer:
    """Build an offline scorer by its `name`; `options` go to its constructor.

    Unknown names raise with the list of known ones, so a typo in run config fails before any work.
    """
    try:
        scorer_class = OFFLINE_SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown offline scorer {name!r}; known: {sorted(OFFLINE_SCORERS)}") from None
    return scorer_class(**options)
