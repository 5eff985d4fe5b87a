"""DetoxifyScorer against tiny, randomly initialised checkpoints in Detoxify's format, built here offline.

Skipped where the `[detoxify]` extra (torch, transformers) is not installed. The pure label mapping is
tested without torch in test_scorers.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bsky_warehouse.records import PROB_COLUMNS, PostText, ScoreResult  # noqa: E402
from bsky_warehouse.scorers import DetoxifyScorer, make_scorer  # noqa: E402

ORIGINAL_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
UNBIASED_CLASSES = [
    "toxicity",
    "severe_toxicity",
    "obscene",
    "identity_attack",
    "insult",
    "threat",
    "sexual_explicit",
]
WORDS = ["you", "are", "a", "nice", "person", "idiot", "i", "hate", "this", "love", "the", "weather", "##s", "."]

TEXTS = [
    "you are a nice person",
    "",
    "you are an idiot",
    "i hate this . i hate this . i hate this",
    "   ",
    "the weather",
    "love",
]


def build_checkpoint(
    directory: Path, classes: list[str], num_outputs: int | None = None, seed: int = 0, prefix: str = ""
) -> Path:
    """A tiny BERT classifier saved as Detoxify saves one, with its tokenizer and config beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizer(str(vocab), do_lower_case=True)
    config = transformers.BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=num_outputs or len(classes),
    )
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification(config).eval()
    tokenizer.save_pretrained(directory)
    config.save_pretrained(directory)
    checkpoint = directory / f"tiny-{seed}.ckpt"
    torch.save(
        {
            "config": {
                "arch": {
                    "args": {
                        "model_type": "bert-base-uncased",
                        "model_name": "BertForSequenceClassification",
                        "tokenizer_name": "BertTokenizer",
                        "num_classes": config.num_labels,
                    }
                },
                "dataset": {"args": {"classes": classes}},
            },
            "state_dict": {f"{prefix}{k}": v for k, v in model.state_dict().items()},
        },
        checkpoint,
    )
    return checkpoint


def score_all(scorer: DetoxifyScorer, texts: list[str]) -> list[ScoreResult]:
    results: list[ScoreResult] = []
    scorer.score([PostText(uri=f"at://post/{i}", text=t) for i, t in enumerate(texts)], results.append)
    return results


def reference_probs(checkpoint: Path, texts: list[str]) -> list[list[float]]:
    """The same model scored one text at a time, straight through transformers."""
    loaded = torch.load(checkpoint, weights_only=True)
    config = transformers.AutoConfig.from_pretrained(checkpoint.parent, local_files_only=True)
    config.num_labels = loaded["config"]["arch"]["args"]["num_classes"]
    model = transformers.BertForSequenceClassification(config).eval()
    model.load_state_dict(loaded["state_dict"], strict=False)
    tokenizer = transformers.BertTokenizer.from_pretrained(checkpoint.parent, local_files_only=True)
    with torch.no_grad():
        return [torch.sigmoid(model(**tokenizer(t, return_tensors="pt")).logits)[0].tolist() for t in texts]


@pytest.fixture
def original_checkpoint(tmp_path: Path) -> Path:
    return build_checkpoint(tmp_path / "original", ORIGINAL_CLASSES)


def test_one_result_per_post_in_order_with_mapped_columns(original_checkpoint: Path):
    results = score_all(DetoxifyScorer(original_checkpoint, batch_size=3), TEXTS)

    assert [r.uri for r in results] == [f"at://post/{i}" for i in range(len(TEXTS))]
    expected_columns = {
        "prob_toxicity",
        "prob_severe_toxicity",
        "prob_profanity",
        "prob_threat",
        "prob_insult",
        "prob_identity_attack",
    }
    for result, text in zip(results, TEXTS, strict=True):
        if text.strip():
            assert result.status == "ok"
            assert set(result.probs) == expected_columns
            assert all(0.0 <= p <= 1.0 for p in result.probs.values())
        else:
            assert (result.status, result.reason, result.probs) == ("skipped", "text_too_short", {})


def test_scores_are_the_models_sigmoid_outputs_in_label_order(original_checkpoint: Path):
    texts = [t for t in TEXTS if t.strip()]
    results = score_all(DetoxifyScorer(original_checkpoint, batch_size=2), texts)
    columns = ["prob_toxicity", "prob_severe_toxicity", "prob_profanity", "prob_threat", "prob_insult"]
    columns.append("prob_identity_attack")
    for result, expected in zip(results, reference_probs(original_checkpoint, texts), strict=True):
        assert [result.probs[c] for c in columns] == pytest.approx(expected, abs=1e-5)


def test_batch_size_does_not_change_scores(original_checkpoint: Path):
    by_size = {size: score_all(DetoxifyScorer(original_checkpoint, batch_size=size), TEXTS) for size in (1, 2, 64)}
    baseline = by_size[1]
    for results in by_size.values():
        assert [r.status for r in results] == [r.status for r in baseline]
        for got, want in zip(results, baseline, strict=True):
            assert got.probs.keys() == want.probs.keys()
            for column, value in want.probs.items():
                assert got.probs[column] == pytest.approx(value, abs=1e-5)


def test_results_are_reported_after_each_batch(original_checkpoint: Path):
    scorer = DetoxifyScorer(original_checkpoint, batch_size=2)
    calls: list[int] = []
    real_predict = scorer.predict

    def counting_predict(texts: list[str]) -> list[dict[str, float]]:
        calls.append(len(seen))
        return real_predict(texts)

    scorer.predict = counting_predict  # type: ignore[method-assign]
    seen: list[ScoreResult] = []
    scorer.score([PostText(uri=str(i), text="you are nice") for i in range(5)], seen.append)
    assert calls == [0, 2, 4]
    assert len(seen) == 5


def test_unbiased_style_checkpoint_maps_only_named_toxicity_outputs(tmp_path: Path):
    checkpoint = build_checkpoint(tmp_path / "unbiased", UNBIASED_CLASSES, num_outputs=16)
    (result,) = score_all(DetoxifyScorer(checkpoint), ["you are an idiot"])
    assert set(result.probs) == {
        "prob_toxicity",
        "prob_severe_toxicity",
        "prob_profanity",
        "prob_identity_attack",
        "prob_insult",
        "prob_threat",
        "prob_sexually_explicit",
    }
    assert set(result.probs) <= set(PROB_COLUMNS)


def test_lightning_prefixed_state_dict_loads(tmp_path: Path):
    plain = build_checkpoint(tmp_path / "plain", ORIGINAL_CLASSES, seed=3)
    prefixed = build_checkpoint(tmp_path / "prefixed", ORIGINAL_CLASSES, seed=3, prefix="model.")
    assert score_all(DetoxifyScorer(prefixed), TEXTS) == score_all(DetoxifyScorer(plain), TEXTS)


def test_environment_variables_and_factory(original_checkpoint: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DETOXIFY_CHECKPOINT", str(original_checkpoint))
    monkeypatch.setenv("DETOXIFY_TOKENIZER", str(original_checkpoint.parent))
    scorer = make_scorer("detoxify", batch_size=4)
    assert scorer.name == "detoxify"
    assert scorer.version.startswith("tiny-0-")
    assert len(score_all(scorer, TEXTS)) == len(TEXTS)


def test_version_follows_the_checkpoint(tmp_path: Path):
    a = DetoxifyScorer(build_checkpoint(tmp_path / "a", ORIGINAL_CLASSES, seed=1))
    b = DetoxifyScorer(build_checkpoint(tmp_path / "b", ORIGINAL_CLASSES, seed=2))
    again = DetoxifyScorer(tmp_path / "a" / "tiny-1.ckpt")
    assert a.version != b.version
    assert a.version == again.version


def test_clear_errors_for_missing_or_malformed_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DETOXIFY_CHECKPOINT", raising=False)
    with pytest.raises(ValueError, match="DETOXIFY_CHECKPOINT"):
        DetoxifyScorer()
    with pytest.raises(FileNotFoundError):
        DetoxifyScorer(tmp_path / "absent.ckpt")

    checkpoint = build_checkpoint(tmp_path / "m", ORIGINAL_CLASSES)
    bare = tmp_path / "m" / "bare.ckpt"
    torch.save({"state_dict": torch.load(checkpoint, weights_only=True)["state_dict"]}, bare)
    with pytest.raises(ValueError, match="not a Detoxify checkpoint"):
        DetoxifyScorer(bare)

    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "x.ckpt").write_bytes(checkpoint.read_bytes())
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        DetoxifyScorer(lonely / "x.ckpt")
