"""Sociopolitical labels from a local model with vLLM's offline engine, on this machine's GPU.

Same instrument and validation as the HTTP backend (`resources.llm`): the prompts come from
`bsky_warehouse.instrument`, decoding is constrained to its schema and every answer goes through
`label_validation.parse_answer`. vLLM is imported only when a label is asked for, so CPU installs never need it.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from bsky_warehouse.instrument import SCHEMA, TEMPERATURE, build_messages, post_ids, prompt_version_for
from bsky_warehouse.label_validation import REASON_EMPTY_TEXT, REASON_TRUNCATED, AnswerError, parse_answer
from bsky_warehouse.records import LabelResult, PostText
from bsky_warehouse.resources.llm import LabelStats, minibatches


class VLLMUnavailableError(RuntimeError):
    """vLLM is not installed, or there is no GPU for it: the offline backend cannot run here."""


def require_vllm() -> None:
    """Raise VLLMUnavailableError unless vllm is importable and torch sees a CUDA device."""
    if importlib.util.find_spec("vllm") is None:
        raise VLLMUnavailableError(
            "the vllm labeler needs the `vllm` package (pip install 'bsky-warehouse[vllm]') on a machine "
            "with a CUDA GPU; use the openai labeler against a `vllm serve` endpoint otherwise"
        )
    import torch

    if not torch.cuda.is_available():
        raise VLLMUnavailableError("the vllm labeler needs a CUDA GPU, and torch sees none on this machine")


@dataclass
class _Pending:
    """Posts awaiting an offline answer and how many times each has been re-asked."""

    posts: tuple[PostText, ...]
    invalid_retries: int = 0


class VLLMLabelerResource(ConfigurableResource):
    """Labels from a local model with vLLM's offline engine (implements the `Labeler` protocol).

    The whole chunk of prompts is handed to `LLM.chat` at once so vLLM's continuous batching keeps the
    GPU full, and prefix caching shares the long system prompt across requests. Answers are constrained
    to SCHEMA by structured outputs and then validated by the same `parse_answer` as the HTTP backend.
    """

    model: str = Field(description="Local model directory (or hub id already in the cache).")
    tensor_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int = Field(default=4096, ge=256)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    enable_prefix_caching: bool = True
    dtype: str = "auto"
    batch_size: int = Field(default=1, ge=1, description="Posts per prompt (minibatch).")
    max_tokens: int = Field(default=256, ge=16, description="Completion-token budget per post in a prompt.")
    max_invalid_retries: int = Field(default=1, ge=0)
    chunk_size: int = Field(
        default=2048, ge=1, description="Prompts per `LLM.chat` call; results are reported after each chunk."
    )
    chat_template_kwargs: dict[str, Any] | None = Field(
        default=None, description="Passed to the chat template, e.g. {'enable_thinking': false} for Qwen3."
    )

    _llm: Any = PrivateAttr(default=None)

    @property
    def name(self) -> str:
        return "vllm"

    @property
    def prompt_version(self) -> str:
        return prompt_version_for(self.batch_size)

    def _engine(self) -> Any:
        """The vllm.LLM, created on first use; vllm is imported here so CPU installs never import it."""
        require_vllm()
        if self._llm is None:
            from vllm import LLM

            self._llm = LLM(
                model=self.model,
                tensor_parallel_size=self.tensor_parallel_size,
                max_model_len=self.max_model_len,
                gpu_memory_utilization=self.gpu_memory_utilization,
                enable_prefix_caching=self.enable_prefix_caching,
                dtype=self.dtype,
            )
        return self._llm

    def _sampling_params(self, n_posts: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        return SamplingParams(
            temperature=TEMPERATURE,
            max_tokens=self.max_tokens * n_posts,
            structured_outputs=StructuredOutputsParams(json=SCHEMA),
        )

    def _generate(self, pending: Sequence[_Pending], stats: LabelStats) -> list[str | AnswerError]:
        """One `LLM.chat` call over all pending prompts; the raw text (or why it is unusable) of each."""
        llm = self._engine()
        conversations = [build_messages(p.posts) for p in pending]
        params = [self._sampling_params(len(p.posts)) for p in pending]
        kwargs: dict[str, Any] = {"use_tqdm": False}
        if self.chat_template_kwargs:
            kwargs["chat_template_kwargs"] = self.chat_template_kwargs
        outputs = llm.chat(conversations, params, **kwargs)
        stats.requests += len(pending)
        texts: list[str | AnswerError] = []
        for output in outputs:
            completion = output.outputs[0]
            stats.prompt_tokens += len(output.prompt_token_ids or ())
            stats.completion_tokens += len(completion.token_ids or ())
            if completion.finish_reason == "length":
                texts.append(AnswerError(REASON_TRUNCATED, "max_tokens reached"))
            else:
                texts.append(completion.text)
        return texts

    def label(self, posts: Sequence[PostText], on_result: Callable[[LabelResult], None]) -> LabelStats:
        """Label `posts` chunk by chunk, reporting each chunk's results before starting the next."""
        stats = LabelStats(posts=len(posts))
        if not posts:
            return stats
        started = time.monotonic()

        def emit(result: LabelResult) -> None:
            stats.record(result)
            on_result(result)

        labelable = []
        for post in posts:
            if post.text.strip():
                labelable.append(post)
            else:
                emit(LabelResult(post.uri, "skipped", REASON_EMPTY_TEXT))
        batches = [_Pending(b) for b in minibatches(labelable, self.batch_size)]
        if batches:
            self._engine()
        for start in range(0, len(batches), self.chunk_size):
            pending = batches[start : start + self.chunk_size]
            while pending:
                pending = self._round(pending, stats, emit)
        stats.elapsed_s = time.monotonic() - started
        return stats

    def _round(self, pending: list[_Pending], stats: LabelStats, emit: Callable[[LabelResult], None]) -> list[_Pending]:
        """Ask once for every pending prompt; emit what is settled and return what must be asked again."""
        again: list[_Pending] = []
        for item, text in zip(pending, self._generate(pending, stats), strict=True):
            ids = post_ids(len(item.posts))
            try:
                if isinstance(text, AnswerError):
                    raise text
                labels = parse_answer(text, ids)
            except AnswerError as exc:
                stats.invalid(exc.reason)
                if len(item.posts) > 1:
                    stats.splits += 1
                    again.extend(_Pending((post,)) for post in item.posts)
                elif item.invalid_retries < self.max_invalid_retries:
                    stats.retries += 1
                    again.append(_Pending(item.posts, item.invalid_retries + 1))
                else:
                    emit(LabelResult(item.posts[0].uri, "failed", exc.reason))
                continue
            for post_id, post in zip(ids, item.posts, strict=True):
                emit(labels[post_id].result(post.uri))
        return again
