"""The CLVP stage: train the text/speech scorer contrastively on the corpus's (text, speech codes) pairs.

Texts are the ids the API scores (BPE ids plus the appended stop); codes are padded the way sampled candidates
reach the scorer (stop, then `fix_speech_decoder_output`: calm codes and the fixed tail), to a random extra length,
because CLVP's mean pooling sees the padding. Each batch holds distinct sentences; the loss is the symmetric
cross-entropy of the batch's similarity matrix, scaled by exp(temperature) with the temperature clamped to
[0, log(max_logit_scale)] as CLAP clamps its logit scale.

WORK_DIR/clvp/ holds the run (`loop.StageRun`: checkpoint.pt, metrics.json) and the best weights (clvp.safetensors
+ clvp.json); `load_scorer` returns them.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ..bench.rerank_report import retrieval_metrics, score_matrix
from ..config import ClvpConfig, TokenIds
from ..frontend.text import BpeTokenizer
from ..models.clvp import ClvpModel
from ..pipeline.trimming import fix_speech_decoder_output
from .autoregressive import text_ids
from .batches import BucketedBatches
from .codes import SpeechCodes, load_codes, speech_tokens
from .config import CLVP_DIR, TOKENIZER_DIR, TRAIN_SPLIT, VALID_SPLIT, RecipeConfig, TrainProgress
from .contrastive_loss import symmetric_contrastive_loss
from .loop import StageRun, initial_model, load_trained, step_generator
from .metadata import read_metadata

PART = "clvp"


def padded_candidates(codes: Sequence[Tensor], length: int, tokens: TokenIds) -> Tensor:
    """Codes (M_i,) -> (B, length) as CLVP sees sampled candidates: each row stopped after its codes and padded
    with the stop token, then fixed (stop -> calm code, the last codes -> the tail). `length` must leave room for
    the stop and the tail after the longest row."""
    rows = torch.full((len(codes), length), tokens.mel_stop, dtype=torch.long)
    for row, row_codes in enumerate(codes):
        if len(row_codes) + 1 + len(tokens.fix_tail) > length:
            raise ValueError(f"a {len(row_codes)}-code item does not fit {length} padded positions")
        rows[row, : len(row_codes)] = row_codes
    return fix_speech_decoder_output(rows, tokens)


def clamp_temperature(clvp: ClvpModel, max_logit_scale: float) -> None:
    """Keep the learned similarity scale exp(temperature) within [1, max_logit_scale] (in place)."""
    with torch.no_grad():
        clvp.temperature.clamp_(0.0, math.log(max_logit_scale))


def distinct_texts(items: Sequence[int], texts: Sequence[Tensor]) -> list[int]:
    """`items` without repeated sentences (a sentence spoken by two voices would be its own negative)."""
    seen, kept = set(), []
    for item in items:
        key = tuple(texts[item].tolist())
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def evaluate_scorer(clvp: ClvpModel, texts: Sequence[Tensor], codes: Sequence[Tensor], tokens: TokenIds,
                    padding: int) -> dict[str, float]:
    """Retrieval on held-out pairs, each text and each padded candidate encoded alone as at inference: the
    symmetric loss of the score matrix ("loss") and CLAP's R@1 / R@5 / mean rank both ways."""
    speech = [padded_candidates([c], len(c) + 1 + len(tokens.fix_tail) + padding, tokens)[0] for c in codes]
    scores = score_matrix(clvp, list(texts), speech)  # (n, n)
    metrics = {"loss": float(symmetric_contrastive_loss(scores.double()))}
    for direction, values in retrieval_metrics(scores).items():
        for name in ("R@1", "R@5", "mean_rank"):
            metrics[f"{direction}_{name}"] = values[name]
    metrics["logit_scale"] = clvp.temperature.exp().item()
    return metrics


def run_clvp(work_dir: Path, config: RecipeConfig, progress: TrainProgress) -> None:
    """Train CLVP (resuming from its checkpoint); a finished run is left as it is."""
    work_dir, settings = Path(work_dir), config.clvp
    utterances = read_metadata(work_dir)
    tokenizer = BpeTokenizer(work_dir / TOKENIZER_DIR)
    codes: SpeechCodes = load_codes(work_dir)
    if codes.ids != [u.id for u in utterances]:
        raise ValueError("the codes were made from another corpus; delete WORK_DIR/codes and rerun the codes stage")
    tokens = speech_tokens(codes, config.autoregressive.fix_tail_length)
    texts = [text_ids(tokenizer, u.text) for u in utterances]
    sized = replace(settings.model, num_speech_tokens=codes.codebook_size)
    clvp = initial_model(ClvpModel, sized, PART, config.seed, config.init_dir)
    clvp.config = replace(clvp.config, score_padding=settings.model.score_padding)  # scored as trained here
    if config.init_dir is None:  # from scratch: start at CLIP's scale, not the inference model's exp(1)
        with torch.no_grad():
            clvp.temperature.fill_(math.log(settings.initial_logit_scale))
    if clvp.config.num_speech_tokens != codes.codebook_size:
        raise ValueError(
            f"{config.init_dir}'s CLVP reads {clvp.config.num_speech_tokens} speech codes but this corpus was encoded "
            f"into {codes.codebook_size}; rerun the codes stage with the same --init model"
        )
    train = [i for i, u in enumerate(utterances) if u.split == TRAIN_SPLIT]
    valid = distinct_texts([i for i, u in enumerate(utterances) if u.split == VALID_SPLIT], texts)[: settings.valid_pairs]
    valid = valid or train[: settings.valid_pairs]
    batches = BucketedBatches([codes.length(i) + len(texts[i]) for i in train], settings.batch_size, config.seed)
    run = StageRun(work_dir / CLVP_DIR, PART, clvp, settings.loop, progress)

    def loss(step: int) -> tuple[Tensor, dict[str, float]]:
        generator = step_generator(config.seed, step)
        clamp_temperature(clvp, settings.max_logit_scale)
        items = distinct_texts([train[i] for i in batches.batch(step)], texts)
        item_codes = [codes.codes(i) for i in items]
        extra = int(torch.randint(settings.max_padding + 1, (1,), generator=generator))
        length = max(len(c) for c in item_codes) + 1 + len(tokens.fix_tail) + extra
        text_batch = torch.nn.utils.rnn.pad_sequence([texts[i] for i in items], batch_first=True,
                                                      padding_value=tokens.text_stop)
        speech = clvp.speech_latents(padded_candidates(item_codes, length, tokens))
        similarity = clvp.score(clvp.text_latents(text_batch)[:, None], speech[None])  # (B, B)
        value = symmetric_contrastive_loss(similarity)
        accuracy = float((similarity.argmax(dim=1) == torch.arange(len(items))).float().mean())
        return value, {"batch_accuracy": accuracy, "logit_scale": clvp.temperature.exp().item()}

    def evaluate(model: ClvpModel) -> dict[str, float]:
        clamp_temperature(model, settings.max_logit_scale)
        return evaluate_scorer(model, [texts[i] for i in valid], [codes.codes(i) for i in valid], tokens,
                               settings.max_padding // 2)

    run.train(loss, evaluate, "items/s", settings.batch_size)


def load_scorer(work_dir: Path) -> ClvpModel:
    """The best CLVP the stage wrote (eval mode)."""
    return load_trained(Path(work_dir) / CLVP_DIR, PART, ClvpModel, ClvpConfig)
