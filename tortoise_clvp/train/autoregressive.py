"""The autoregressive stage: train the speech-code decoder by teacher forcing, as Tortoise trains its UnifiedVoice.

Every row is laid out exactly as inference lays it out: [conditioning latent, start, text ids, stop, stop, mel start,
codes, mel stop] (the API appends one text stop, the decoder wraps the text in start/stop), with the row's own text
and mel positions; rows of a batch are padded at the end, which causal attention never looks at. The loss is the
cross-entropy of every code and the final stop plus `text_loss_weight` times the cross-entropy of the text tokens
(a training-only text head, not exported). The conditioning of an item is made of OTHER utterances of its voice.

WORK_DIR/autoregressive/ holds the run (`loop.StageRun`: checkpoint.pt, metrics.json) and the best weights
(autoregressive.safetensors + .json, with the text head); `load_decoder` returns the decoder alone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TOKENS, AutoregressiveConfig
from ..frontend.mel import load_mel_norms
from ..frontend.text import BpeTokenizer
from ..models.autoregressive import AutoregressiveModel
from ..pipeline.decoding import DecodingOptions
from .alignment import RowLayout, head_attention, off_diagonal_mass
from .batches import BucketedBatches
from .codes import MEL_NORMS_FILE, SpeechCodes, load_codes, speech_tokens
from .config import (
    AUTOREGRESSIVE_DIR,
    TOKENIZER_DIR,
    TRAIN_SPLIT,
    VALID_SPLIT,
    AlignmentGuide,
    AutoregressiveTrainConfig,
    RecipeConfig,
    TrainProgress,
)
from .loop import StageRun, initial_model, load_trained, step_generator
from .mel_cache import MelCache, load_mel_cache, voice_conditioning
from .metadata import Utterance, read_metadata

PART = "autoregressive"
DEFAULT_MAX_NEW_TOKENS = DecodingOptions().max_new_tokens


def text_ids(tokenizer: BpeTokenizer, text: str) -> Tensor:
    """A sentence's ids as the API makes them: the BPE ids plus the one text stop id Tortoise appends."""
    return torch.tensor([*tokenizer.encode(text), TOKENS.text_stop], dtype=torch.long)


class TeacherForced(NamedTuple):
    """What a teacher-forced batch gives: the logits and targets of every real code (and stop) and text position,
    and the alignment guide's off-diagonal mass (`alignment.py`) when a guide was asked for."""

    mel_logits: Tensor
    mel_targets: Tensor
    text_logits: Tensor
    text_targets: Tensor
    off_diagonal: Optional[Tensor] = None


class AutoregressiveTraining(nn.Module):
    """The decoder plus the text head Tortoise trains alongside it (the next-text-token predictor inference drops)."""

    def __init__(self, config: AutoregressiveConfig):
        super().__init__()
        self.config = config
        self.decoder = AutoregressiveModel(config)
        self.text_head = nn.Linear(config.model_dim, config.text_vocab)

    def can_guide(self, guide: AlignmentGuide) -> bool:
        """Whether the decoder has the layer and heads `guide` reads."""
        return 0 <= guide.layer < self.config.layers and 1 <= guide.heads <= self.config.heads

    def forward(
        self,
        cond_mels: Tensor,
        voice_of_row: Tensor,
        texts: Sequence[Tensor],
        codes: Sequence[Tensor],
        guide: AlignmentGuide | None = None,
    ) -> TeacherForced:
        """Teacher-forced logits of a batch.

        cond_mels (V, 80, 517): one conditioning mel per voice of the batch; voice_of_row (B,): each row's voice.
        texts: B text id tensors (with the appended stop); codes: B code tensors. Returns mel_logits (N, codes),
        mel_targets (N,), text_logits (N', text_vocab), text_targets (N',) over the rows' real positions, and with
        a `guide`, the off-diagonal attention mass of its heads. Inputs may live on the CPU: the batch is computed
        on the decoder's device.
        """
        decoder, tokens = self.decoder, self.config.tokens
        device = decoder.device
        latents = decoder.get_conditioning(cond_mels[:, None].to(device))[voice_of_row.to(device)]  # (B, C)
        mel_start, mel_stop = torch.tensor([tokens.mel_start]), torch.tensor([tokens.mel_stop])
        rows, mel_rows, mel_cols, mel_targets, text_rows, text_cols, text_targets = [], [], [], [], [], [], []
        layouts = []
        for row, (text, row_codes) in enumerate(zip(texts, codes)):
            wrapped = decoder.wrap_text(text[None])[0]  # (T + 2,)
            mel = torch.cat([mel_start, row_codes.cpu(), mel_stop])  # (M + 2,)
            text_emb = decoder.text_embedding(wrapped.to(device)) + decoder.text_pos(torch.arange(len(wrapped), device=device))
            mel_emb = decoder.embed_mel(mel[None].to(device), torch.arange(len(mel), device=device))[0]
            rows.append(torch.cat([latents[row, None], text_emb, mel_emb]))  # (1 + T + 2 + M + 2, C)
            # position j predicts input j + 1: text positions 1..T+1 predict text 1..T+1, mel start..last code
            # predict the codes and the stop
            first_mel = 1 + len(wrapped)
            text_rows += [row] * (len(wrapped) - 1)
            text_cols.append(torch.arange(1, len(wrapped)))
            text_targets.append(wrapped[1:])
            mel_rows += [row] * (len(mel) - 1)
            mel_cols.append(torch.arange(first_mel, first_mel + len(mel) - 1))
            mel_targets.append(mel[1:])
            layouts.append(RowLayout(1, first_mel, first_mel, first_mel + len(mel) - 1))
        x = nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (B, L, C), padded at the end
        guided_inputs: list[Tensor] = []  # what the guided layer's attention sees
        hook = None
        if guide is not None:
            if not self.can_guide(guide):
                raise ValueError(
                    f"the alignment guide reads layer {guide.layer} and {guide.heads} head(s), but the decoder has "
                    f"{len(decoder.blocks)} layers of {self.config.heads} heads"
                )
            guided = decoder.blocks[guide.layer].attn
            hook = guided.register_forward_pre_hook(lambda module, args: guided_inputs.append(args[0]))
        try:
            hidden = decoder.final_norm(decoder.transformer(x))
        finally:
            if hook is not None:
                hook.remove()
        off_diagonal = None
        if guide is not None:
            attention = head_attention(guided.qkv(guided_inputs[0]), guided.heads, guide.heads)
            off_diagonal = off_diagonal_mass(attention, layouts, guide.sigma)
        mel_hidden = hidden[torch.tensor(mel_rows, device=device), torch.cat(mel_cols).to(device)]
        text_hidden = hidden[torch.tensor(text_rows, device=device), torch.cat(text_cols).to(device)]
        return TeacherForced(
            decoder.mel_head(mel_hidden), torch.cat(mel_targets).to(device), self.text_head(text_hidden),
            torch.cat(text_targets).to(device), off_diagonal,
        )


class ArData:
    """The stage's items: text ids, codes, and each voice's training utterances to draw conditioning from."""

    def __init__(self, utterances: Sequence[Utterance], tokenizer: BpeTokenizer, codes: SpeechCodes, mels: MelCache):
        if codes.ids != [u.id for u in utterances] or mels.ids != codes.ids:
            raise ValueError("the codes and mel cache were made from another corpus; delete WORK_DIR/codes and rerun")
        self.utterances, self.codes, self.mels = utterances, codes, mels
        self.texts = [text_ids(tokenizer, u.text) for u in utterances]
        self.pools: dict[str, list[int]] = defaultdict(list)
        for index, utterance in enumerate(utterances):
            if utterance.split == TRAIN_SPLIT:
                self.pools[utterance.voice].append(index)

    def split(self, name: str) -> list[int]:
        return [i for i, u in enumerate(self.utterances) if u.split == name and len(self.pools[u.voice]) > 1]

    def batch(self, items: Sequence[int], clips: int, generator: torch.Generator):
        """(cond_mels, voice_of_row, texts, codes) for `items`: one conditioning per voice, drawn from that voice's
        training utterances that are not in the batch."""
        voices = sorted({self.utterances[i].voice for i in items})
        taken = set(items)
        conditioning = []
        for voice in voices:
            pool = [i for i in self.pools[voice] if i not in taken] or [i for i in self.pools[voice] if i != items[0]]
            conditioning.append(voice_conditioning(self.mels, pool, clips, generator))
        voice_of_row = torch.tensor([voices.index(self.utterances[i].voice) for i in items])
        return torch.stack(conditioning), voice_of_row, [self.texts[i] for i in items], [self.codes.codes(i) for i in items]


def sized_config(settings: AutoregressiveTrainConfig, data: ArData) -> AutoregressiveConfig:
    """The recipe's decoder sizes completed from the data: code rows, calm code and tail from the codebook, position
    tables long enough for the corpus's longest text and codes (and for the default decoding budget)."""
    tokens = speech_tokens(data.codes, settings.fix_tail_length)
    longest_text = max(len(text) for text in data.texts)
    longest_codes = max(data.codes.length(i) for i in range(len(data.utterances)))
    return replace(
        settings.model,
        number_mel_codes=tokens.mel_stop + 1,
        calm_code=tokens.calm,
        fix_tail=tokens.fix_tail,
        max_text_tokens=longest_text,
        max_mel_tokens=max(longest_codes + 1, DEFAULT_MAX_NEW_TOKENS),
    )


def fits(config: AutoregressiveConfig, data: ArData, index: int) -> bool:
    """Whether an item fits the decoder's position tables (a fine-tuned model keeps its own tables)."""
    return len(data.texts[index]) <= config.max_text_tokens and data.codes.length(index) < config.max_mel_tokens


@torch.no_grad()
def evaluate_decoder(model: AutoregressiveTraining, data: ArData, items: list[int], settings: AutoregressiveTrainConfig,
                     seed: int) -> dict[str, float]:
    """Teacher-forced held-out metrics: code cross-entropy ("loss"), code accuracy (codes and the stop), text loss,
    and text_gain: how much worse (nats per code) the codes are predicted from another row's text (each batch's texts
    rolled by one), i.e. how much the decoder reads the text; near 0 means it speaks without reading; off_diagonal:
    the alignment guide's loss (`alignment.py`), how far its heads are from reading the text in order. The
    conditioning draws are seeded the same at every evaluation, so the numbers compare across steps."""
    generator = torch.Generator().manual_seed(seed)
    guide = settings.alignment if model.can_guide(settings.alignment) else None
    mel_loss = text_loss = correct = other_text_loss = alignment = 0.0
    codes = texts = other_text_codes = 0
    for start in range(0, len(items), settings.batch_size):
        cond_mels, voice_of_row, batch_texts, batch_codes = data.batch(
            items[start : start + settings.batch_size], settings.conditioning_clips, generator
        )
        mel_logits, mel_targets, text_logits, text_targets, off_diagonal = model(
            cond_mels, voice_of_row, batch_texts, batch_codes, guide
        )
        if guide is not None:
            alignment += float(off_diagonal) * len(batch_texts)
        batch_mel_loss = float(F.cross_entropy(mel_logits, mel_targets, reduction="sum"))
        mel_loss += batch_mel_loss
        text_loss += float(F.cross_entropy(text_logits, text_targets, reduction="sum"))
        correct += float((mel_logits.argmax(dim=1) == mel_targets).sum())
        codes, texts = codes + len(mel_targets), texts + len(text_targets)
        if len(batch_texts) > 1:
            rolled = batch_texts[1:] + batch_texts[:1]
            other_logits = model(cond_mels, voice_of_row, rolled, batch_codes).mel_logits
            other_text_loss += float(F.cross_entropy(other_logits, mel_targets, reduction="sum")) - batch_mel_loss
            other_text_codes += len(mel_targets)
    metrics = {
        "loss": mel_loss / codes,
        "accuracy": correct / codes,
        "text_loss": text_loss / texts,
        "text_gain": other_text_loss / max(other_text_codes, 1),
    }
    if guide is not None:
        metrics["off_diagonal"] = alignment / len(items)
    return metrics


def _start_model(settings: AutoregressiveTrainConfig, data: ArData, config: RecipeConfig) -> AutoregressiveTraining:
    sized = sized_config(settings, data)
    if config.init_dir is None:
        return initial_model(AutoregressiveTraining, sized, PART, config.seed)
    decoder = initial_model(AutoregressiveModel, sized, PART, config.seed, config.init_dir)
    if decoder.config.number_mel_codes != sized.number_mel_codes:
        raise ValueError(
            f"{config.init_dir}'s decoder has {decoder.config.number_mel_codes - 2} speech codes but this corpus was "
            f"encoded into {sized.number_mel_codes - 2}; rerun the codes stage with the same --init model"
        )
    model = initial_model(AutoregressiveTraining, replace(decoder.config, dropout=settings.model.dropout), PART, config.seed)
    model.decoder.load_state_dict(decoder.state_dict())
    return model


def run_autoregressive(work_dir: Path, config: RecipeConfig, progress: TrainProgress) -> None:
    """Train the decoder (resuming from its checkpoint); a finished run is left as it is."""
    work_dir, settings = Path(work_dir), config.autoregressive
    utterances = read_metadata(work_dir)
    tokenizer = BpeTokenizer(work_dir / TOKENIZER_DIR)
    codes = load_codes(work_dir)
    mels = load_mel_cache(work_dir, load_mel_norms(work_dir / TOKENIZER_DIR / MEL_NORMS_FILE))
    data = ArData(utterances, tokenizer, codes, mels)
    model = _start_model(settings, data, config)
    train = [i for i in data.split(TRAIN_SPLIT) if fits(model.config, data, i)]
    valid = [i for i in data.split(VALID_SPLIT) if fits(model.config, data, i)][: settings.valid_items]
    if not train:
        raise ValueError("no training utterance fits the decoder (or no voice has two of them to condition on)")
    valid = valid or train[: settings.valid_items]
    batches = BucketedBatches([data.codes.length(i) + len(data.texts[i]) for i in train], settings.batch_size, config.seed)
    run = StageRun(work_dir / AUTOREGRESSIVE_DIR, PART, model, settings.loop, progress, config.device)

    def loss(step: int) -> tuple[Tensor, dict[str, float]]:
        generator = step_generator(config.seed, step)
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))  # dropout: the same on every run
        items = [train[i] for i in batches.batch(step)]
        guide = settings.alignment if settings.alignment_weight > 0 else None
        forced = model(*data.batch(items, settings.conditioning_clips, generator), guide)
        mel_loss = F.cross_entropy(forced.mel_logits, forced.mel_targets)
        text_loss = F.cross_entropy(forced.text_logits, forced.text_targets)
        total = mel_loss + settings.text_loss_weight * text_loss
        metrics = {"mel_loss": mel_loss.item(), "text_loss": text_loss.item(), "codes": float(len(forced.mel_targets))}
        if guide is not None:
            total = total + settings.alignment_weight * forced.off_diagonal
            metrics["off_diagonal"] = forced.off_diagonal.item()
        return total, metrics

    run.train(loss, lambda trained: evaluate_decoder(trained, data, valid, settings, config.seed), "items/s",
              settings.batch_size)


def load_decoder(work_dir: Path) -> AutoregressiveModel:
    """The best decoder the stage wrote (eval mode, without the training-only text head)."""
    return load_trained(Path(work_dir) / AUTOREGRESSIVE_DIR, PART, AutoregressiveTraining, AutoregressiveConfig).decoder
