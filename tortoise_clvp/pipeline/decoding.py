"""The autoregressive loop: sample many speech-token candidates for one text and one voice.

Per batch: the prompt [conditioning latent, text, start token] is prefilled once for one row (the cache keeps it
once, as a prefix every row shares); then one `decode_step` per token for the whole batch, rows that emitted the
stop token padded with it, until every row stopped or `max_new_tokens` is reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import torch
from torch import Tensor

from ..config import TOKENS
from ..errors import InputTextError, OptionsError
from ..models.autoregressive import AutoregressiveModel
from .sampling import FAITHFUL_SAMPLING, SamplingOptions, initial_seen, next_tokens

MelPositions = Literal["contiguous", "kv_cache_quirk"]


@dataclass(frozen=True)
class DecodingOptions:
    """How many candidates to sample and how.

    num_candidates: candidates per text (Tortoise presets: 16 to 256).
    batch_size: rows decoded together; larger is faster per candidate until memory or compute runs out.
    max_new_tokens: cap on speech tokens per candidate (Tortoise: 500, about 23 s of speech).
    min_new_tokens: the stop token is banned before this many tokens (benchmarks force lengths with it).
    mel_positions: 'contiguous' gives generated token i mel position i, as in training and in the original's
        TextToSpeech default; 'kv_cache_quirk' skips position 1 like the original with kv_cache=True and
        transformers' ClvpForCausalLM (the first generated token gets position 2).
    drop_remainder: the original runs num_candidates // batch_size full batches and silently drops the
        rest; by default the last batch is just smaller.
    """

    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    num_candidates: int = 16
    batch_size: int = 16
    max_new_tokens: int = 500
    min_new_tokens: int = 0
    mel_positions: MelPositions = "contiguous"
    drop_remainder: bool = False

    def __post_init__(self) -> None:
        if self.num_candidates < 1 or self.batch_size < 1:
            raise OptionsError(
                f"num_candidates and batch_size must be >= 1 (got {self.num_candidates}, {self.batch_size})"
            )
        if self.drop_remainder and self.num_candidates < self.batch_size:
            raise OptionsError(
                f"drop_remainder with num_candidates {self.num_candidates} < batch_size {self.batch_size} "
                "would sample nothing; lower batch_size"
            )
        shortest = len(TOKENS.fix_tail)  # rows end in fix_speech_decoder_output's tail; check_lengths checks the model's
        if self.max_new_tokens < shortest or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise OptionsError(
                f"need 0 <= min_new_tokens <= max_new_tokens and max_new_tokens >= {shortest} "
                f"(got min_new_tokens {self.min_new_tokens}, max_new_tokens {self.max_new_tokens})"
            )
        if self.mel_positions not in ("contiguous", "kv_cache_quirk"):
            raise OptionsError(f"mel_positions must be 'contiguous' or 'kv_cache_quirk', got {self.mel_positions!r}")

    def with_candidates(self, count: int) -> "DecodingOptions":
        """These options sampling `count` candidates, in batches no larger than before (nor than `count`)."""
        return replace(self, num_candidates=count, batch_size=min(count, self.batch_size))

    def batch_sizes(self) -> list[int]:
        full, rest = divmod(self.num_candidates, self.batch_size)
        return [self.batch_size] * full + ([] if self.drop_remainder or not rest else [rest])


FAITHFUL_DECODING = DecodingOptions(sampling=FAITHFUL_SAMPLING, drop_remainder=True)


def check_lengths(model: AutoregressiveModel, text_ids: Tensor, options: DecodingOptions) -> None:
    """Raise a clear error if the text or the token budget does not fit the model's position tables."""
    config = model.config
    if text_ids.numel() == 0:
        raise InputTextError("the text produced no tokens; give some words to speak")
    if text_ids.numel() > config.max_text_tokens:
        raise InputTextError(
            f"the text is {text_ids.numel()} tokens long; this model takes at most {config.max_text_tokens}. "
            "Split it into shorter pieces (the long-text mode does this for you)."
        )
    skipped = 1 if options.mel_positions == "kv_cache_quirk" else 0
    longest = options.max_new_tokens + 1 + skipped  # start token at position 0
    if longest > config.mel_positions:
        raise OptionsError(
            f"max_new_tokens {options.max_new_tokens} needs {longest} mel positions; the model has "
            f"{config.mel_positions}. Use max_new_tokens <= {config.mel_positions - 1 - skipped}."
        )
    tail = len(config.tokens.fix_tail)
    if options.max_new_tokens < tail:
        raise OptionsError(f"max_new_tokens {options.max_new_tokens} is shorter than this model's {tail}-code fixed tail")


@torch.no_grad()
def sample_batch(
    model: AutoregressiveModel,
    prompt: Tensor,
    rows: int,
    options: DecodingOptions,
    generator: torch.Generator | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Sample `rows` candidates for one prompt (1, P, C) -> codes (rows, n) with n <= max_new_tokens.

    Rows that stopped are padded with the stop token; the loop ends once every row has stopped.
    `on_step(tokens, finished)` after every step: tokens decoded per row so far, rows that have stopped.
    """
    device = prompt.device
    stop = model.config.tokens.mel_stop
    start = model.embed_mel(
        torch.full((1, 1), model.config.tokens.mel_start, device=device), torch.zeros(1, dtype=torch.long, device=device)
    )
    prefix = torch.cat([prompt, start.to(prompt.dtype)], dim=1)  # (1, P + 1, C)
    prefix_len = prefix.shape[1]
    model.setup_cache(rows, prefix_len + options.max_new_tokens)
    logits = model.prefill(prefix).expand(rows, -1)  # (rows, V)

    seen = initial_seen(rows, logits.shape[-1], options.sampling, device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    codes = torch.full((rows, options.max_new_tokens), stop, dtype=torch.long, device=device)
    row_index = torch.arange(rows, device=device)
    position_offset = 2 if options.mel_positions == "kv_cache_quirk" else 1
    for step in range(options.max_new_tokens):
        forbid_stop = step < options.min_new_tokens
        tokens = next_tokens(logits, seen, options.sampling, generator, forbid_stop)
        tokens = tokens.masked_fill(finished, stop)
        codes[:, step] = tokens
        seen[row_index, tokens] = True
        finished |= tokens == stop
        if on_step is not None:
            on_step(step + 1, int(finished.sum()))
        if step + 1 == options.max_new_tokens or bool(finished.all()):
            return codes[:, : step + 1]
        logits = model.decode_step(tokens, step + position_offset, prefix_len + step)
    raise AssertionError("unreachable")


def sample_candidates(
    model: AutoregressiveModel,
    cond_latent: Tensor,
    text_ids: Tensor,
    options: DecodingOptions,
    generator: torch.Generator | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> Tensor:
    """All candidates for one text: conditioning latent (C,) or (1, C), text ids (T,) -> codes (N, max_new_tokens).

    `text_ids` are the tokenizer's ids plus the one text stop id that Tortoise's tts() appends; the decoder's own
    start/stop text tokens are added here. Every row is padded with the stop token to `max_new_tokens`
    (as the original pads its batches; the model's own stop token, `model.config.tokens`), which is what CLVP
    scores. `on_batch(done, total)` reports progress.

    `on_step(tokens, finished)` after every decoding step, summed over the batches: tokens decoded per row (out of
    len(batches) * max_new_tokens; a batch whose rows all stopped early counts in full once it ends) and
    candidates finished (stopped, or at the end of their batch).
    """
    check_lengths(model, text_ids, options)
    text = model.wrap_text(text_ids.reshape(1, -1).to(model.device))
    with torch.no_grad():
        prompt = model.embed_prompt(cond_latent.reshape(1, -1).to(model.device, model.dtype), text)
    batches = options.batch_sizes()
    results = []
    try:
        for index, rows in enumerate(batches):
            tokens_before, finished_before = index * options.max_new_tokens, sum(batches[:index])
            step_hook = None if on_step is None else (
                lambda tokens, finished: on_step(tokens_before + tokens, finished_before + finished)
            )
            codes = sample_batch(model, prompt, rows, options, generator, step_hook)
            padding = (0, options.max_new_tokens - codes.shape[1])
            results.append(torch.nn.functional.pad(codes, padding, value=model.config.tokens.mel_stop))
            if on_step is not None:
                on_step(tokens_before + options.max_new_tokens, finished_before + rows)
            if on_batch is not None:
                on_batch(index + 1, len(batches))
    finally:
        model.release_cache()
    return torch.cat(results, dim=0)

