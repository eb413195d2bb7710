"""Every training setting in one place: one frozen dataclass per stage, gathered in `RecipeConfig`.

`RecipeConfig()` is the full recipe. Measured on a 2-core machine (2026-11-29/30; the model stages on one thread
each, two at a time): corpus 20 min, tokenizer 1 min, codes 13 min, decoder 61 min for its first 2000 steps and
~90 min for the 2500 after, CLVP 25 min, vocoder 41 min, diffusion ~95 min plus its examples. The model does not
yet speak at these budgets (see the README). `RecipeConfig.smoke()` runs every stage at toy scale (a handful of
sentences, a few steps each) so a test can prove the whole recipe in about two minutes.
Stage functions take the whole `RecipeConfig` and read their own part.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from ..config import AutoregressiveConfig, ClvpConfig, DiffusionConfig, DvaeConfig, VocoderConfig

# Work folder layout (relative to WORK_DIR), shared by every stage.
CORPUS_DIR = "corpus"  # metadata.jsonl, wavs_22k/, wavs_24k/
METADATA_FILE = "metadata.jsonl"
TOKENIZER_DIR = "tokenizer"  # tokenizer.json, mel_norms.pth
CODES_DIR = "codes"  # the discrete VAE's checkpoint and every utterance's speech codes
AUTOREGRESSIVE_DIR = "autoregressive"
CLVP_DIR = "clvp"
DIFFUSION_DIR = "diffusion"
VOCODER_DIR = "vocoder"
EXPORT_DIR = "export"

# A stage reports to the caller (the CLI draws it): (what, done, total, metrics such as loss or items/s).
TrainProgress = Callable[[str, int, int, dict[str, float]], None]

# Splits written into metadata.jsonl
TRAIN_SPLIT = "train"  # training voices, training sentences
VALID_SPLIT = "valid"  # training voices, held-out sentences (never trained on)
UNSEEN_VOICE_SPLIT = "unseen_voice"  # held-out voices (cloning tests), held-out sentences


# Voice roles written into voices.json
TRAIN_ROLE = "train"  # speaks training sentences (train split) and held-out sentences (valid split)
UNSEEN_ROLE = "unseen"  # never trained on: speaks held-out sentences only (unseen_voice split), for cloning tests
PIPER_ENGINE = "piper"
ESPEAK_ENGINE = "espeak-ng"


@dataclass(frozen=True)
class VoiceSpec:
    """One synthetic voice of the corpus: an engine, its settings, and an optional pitch/formant shift.

    Piper settings: length_scale (0.8-1.2, < 1 is faster), noise_scale (0.3-0.8, voice-quality variation),
    noise_w_scale (0.4-1.0, duration variation). espeak-ng settings: espeak_voice (a language plus a variant, e.g.
    "en-us+m3"), pitch (0-99) and speed (words per minute, 120-200). pitch_cents shifts pitch and formants together
    (sox `pitch`, -700..700), which makes a different-sounding speaker of the same engine. weight: how often the
    voice is drawn relative to the others of its role.
    """

    name: str
    engine: str  # PIPER_ENGINE or ESPEAK_ENGINE
    role: str = TRAIN_ROLE
    weight: float = 1.0
    length_scale: float = 1.0
    noise_scale: float = 0.667
    noise_w_scale: float = 0.8
    espeak_voice: str = "en-us"
    pitch: int = 50
    speed: int = 165
    pitch_cents: int = 0


def _piper(name: str, role: str = TRAIN_ROLE, **settings: float) -> VoiceSpec:
    return VoiceSpec(name, PIPER_ENGINE, role, **settings)


def _espeak(name: str, voice: str, pitch: int, speed: int, role: str = TRAIN_ROLE, **settings: float) -> VoiceSpec:
    return VoiceSpec(name, ESPEAK_ENGINE, role, espeak_voice=voice, pitch=pitch, speed=speed, **settings)


# Piper (en_US-joe-medium, CC0 data) renders ~12x faster than real time on 2 cores, espeak-ng ~100x: Piper voices
# weigh 1.5 so they speak about half of the training audio while the full corpus renders in about half an hour.
FULL_VOICES = (
    _piper("piper_joe", weight=1.5),
    _piper("piper_joe_brisk", weight=1.5, length_scale=0.85, noise_scale=0.5, noise_w_scale=0.6, pitch_cents=150),
    _piper("piper_joe_low", weight=1.5, length_scale=1.1, noise_scale=0.7, noise_w_scale=0.9, pitch_cents=-350),
    _piper("piper_joe_high", weight=1.5, length_scale=0.95, pitch_cents=450),
    _espeak("espeak_us_m3", "en-us+m3", pitch=45, speed=160),
    _espeak("espeak_gb_f3", "en-gb+f3", pitch=55, speed=155),
    _espeak("espeak_us_f2", "en-us+f2", pitch=60, speed=170),
    _espeak("espeak_scot_m1", "en-gb-scotland+m1", pitch=40, speed=150),
    _espeak("espeak_rp_m7", "en-gb-x-rp+m7", pitch=35, speed=145),
    _piper("piper_joe_deep", UNSEEN_ROLE, length_scale=1.05, noise_scale=0.6, pitch_cents=-600),
    _espeak("espeak_us_f4", "en-us+f4", pitch=70, speed=160, role=UNSEEN_ROLE),
    _espeak("espeak_lanc_m5", "en-gb-x-gbclan+m5", pitch=45, speed=175, role=UNSEEN_ROLE),
)
SMOKE_VOICES = (
    _piper("piper_joe"),
    _espeak("espeak_us_m3", "en-us+m3", pitch=45, speed=160),
    _espeak("espeak_us_f4", "en-us+f4", pitch=70, speed=160, role=UNSEEN_ROLE),
)


@dataclass(frozen=True)
class CorpusConfig:
    """How many sentences, which voices, and the split.

    Sentences come from WordNet 3.0's example phrases and our own everyday-sentence generator (numbers, dates,
    money, abbreviations), mixed, deduplicated and split before any is rendered. Every training sentence is spoken
    by 1 or 2 training voices (2 with probability second_voice_rate); every held-out (valid) sentence by one
    training voice; every unseen-voice sentence by every unseen voice. With data_dir set, the corpus is read from
    an LJSpeech-style folder instead (metadata.csv + wavs/), valid_fraction of it held out.
    """

    train_sentences: int = 8000
    valid_sentences: int = 400
    unseen_sentences: int = 200
    everyday_share: float = 0.2  # of all sentences, generated everyday ones (the rest from WordNet)
    min_words: int = 3
    max_words: int = 20
    second_voice_rate: float = 0.5
    voices: tuple[VoiceSpec, ...] = FULL_VOICES
    wordnet_dir: Path = Path("/usr/share/wordnet")  # Debian's wordnet-base (data.noun, data.verb, ...)
    workers: int = 2  # rendering processes, one thread each
    chunk_size: int = 40  # utterances per unit of work (and of resuming)
    data_dir: Optional[Path] = None  # an LJSpeech-style folder of the user's own recordings
    valid_fraction: float = 0.05
    min_clip_seconds: float = 0.3
    max_clip_seconds: float = 20.0


@dataclass(frozen=True)
class TokenizerConfig:
    """The text BPE and the mel normalisation statistics."""

    vocab_size: int = 255
    mel_norm_clips: int = 2000  # training clips (at most) the per-band mel means are averaged over


@dataclass(frozen=True)
class LoopConfig:
    """How a model trains: its steps, the AdamW optimiser and learning-rate schedule, when it evaluates and saves.

    The learning rate rises linearly over warmup_steps, then follows a cosine down to final_lr_fraction of itself
    at the last step. Every eval_every steps the held-out metrics are computed and the best weights kept; patience
    evaluations without improvement stop the run early (0: never). A checkpoint is written every checkpoint_every
    steps (and after every evaluation). ema_decay > 0 keeps an exponential moving average of the weights (warmed
    up as min(ema_decay, (1 + step) / (10 + step))), which is what is evaluated and exported.
    """

    steps: int
    learning_rate: float
    warmup_steps: int = 200
    final_lr_fraction: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # the gradient's global norm is clipped to this
    eval_every: int = 500
    checkpoint_every: int = 100
    patience: int = 0
    ema_decay: float = 0.0


@dataclass(frozen=True)
class VocoderTrainConfig:
    """The UnivNet vocoder (a small `VocoderConfig`, 2.0 M parameters) trained on random segments of the corpus's
    24 kHz audio with the multi-resolution STFT loss plus mel_loss_weight times the mel L1 loss.

    No discriminator: a step of this generator alone costs about 0.7 s of one quiet core (8 segments, 2.7 s of
    audio), so the recipe's 2500 steps take about half an hour; an adversarial discriminator runs on real and
    generated audio at every step (at least doubling its cost), and GAN vocoders such as UnivNet are trained far
    longer than this budget allows. It was not tried here.
    """

    model: VocoderConfig = field(default_factory=lambda: VocoderConfig(channel_size=16, kpnet_hidden_channels=32))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=2500, learning_rate=5e-4))
    batch_size: int = 8
    segment_frames: int = 32  # mel frames per training segment (x 256 samples: 0.34 s)
    mel_loss_weight: float = 1.0
    valid_clips: int = 24  # held-out clips vocoded whole at every evaluation


@dataclass(frozen=True)
class DiffusionTrainConfig:
    """The diffusion decoder (a small `DiffusionConfig`; its latent width and code rows are taken from the trained
    decoder) trained on teacher-forced decoder latents, another clip of the same voice, and the 24 kHz mel.

    Each item is a random window of at most max_codes speech codes (and the mel frames they make); the conditioning
    is dropped (the learned unconditioned embedding instead) for unconditioned_rate of the items, so
    conditioning-free guidance works. vb_weight weighs the variational-bound term that trains the learned variance.
    """

    model: DiffusionConfig = field(
        default_factory=lambda: DiffusionConfig(model_channels=128, num_layers=4, num_heads=4, prediction="v")
    )
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(steps=8000, learning_rate=4e-4, weight_decay=0.01, ema_decay=0.999)
    )
    batch_size: int = 8
    max_codes: int = 48  # speech codes per training window (x ~4.35 mel frames: about 2.2 s)
    unconditioned_rate: float = 0.15
    vb_weight: float = 1.0
    max_examples: int = 15000  # training utterances (the first, in corpus order); preparing one costs a decoder pass
    valid_items: int = 24  # held-out utterances scored at every evaluation
    sampled_items: int = 4  # ... of which this many are also sampled (as fast_dpm samples, in sample_steps steps)
    sample_steps: int = 20
    reference_clips: int = 64  # per voice: the clips its diffusion conditioning is drawn from


@dataclass(frozen=True)
class CodesConfig:
    """The discrete VAE (a small `DvaeConfig`) trained on random crops of the corpus's conditioning mels, then every
    utterance encoded into speech codes.

    The loss is the reconstruction MSE on the normalised log-mel plus commitment_weight times the distance of the
    encoder's outputs to their codes. The codebook follows the encoder outputs assigned to each code as a moving
    average (codebook_decay); a code whose average use falls below dead_code_fraction of an even share is restarted
    on a random encoder output. The calm code (the code of silence, which the decoder pads stopped candidates with) is
    the most frequent code on the quietest silence_quantile of the corpus's code frames.
    """

    model: DvaeConfig = field(default_factory=DvaeConfig)
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(steps=2000, learning_rate=1e-3, warmup_steps=100, eval_every=250,
                                           checkpoint_every=50, patience=4)
    )
    batch_size: int = 32
    crop_frames: int = 128  # mel frames per training crop (1.5 s); a multiple of the model's compression
    commitment_weight: float = 0.25
    codebook_decay: float = 0.99
    dead_code_fraction: float = 0.1
    valid_items: int = 200  # held-out utterances scored whole at every evaluation
    silence_quantile: float = 0.02


@dataclass(frozen=True)
class AlignmentGuide:
    """Which attention the alignment guide (`alignment.py`) reads: the first `heads` heads of decoder layer `layer`
    (0-based), and the band's width sigma in relative position (Tachibana et al.: 0.2)."""

    layer: int = 1
    heads: int = 2
    sigma: float = 0.2


@dataclass(frozen=True)
class AutoregressiveTrainConfig:
    """The decoder (a small `AutoregressiveConfig`) trained by teacher forcing on (voice, text, codes) triples.

    number_mel_codes, calm_code and fix_tail come from the trained codebook (its size + start and stop; fix_tail is
    fix_tail_length calm codes), max_text_tokens and max_mel_tokens from the corpus's longest items (max_mel_tokens
    at least the decoding default of 500, so default decoding options fit). The loss is the speech-code cross-entropy
    plus text_loss_weight times the text cross-entropy, as Tortoise trains. Each item is conditioned on up to
    conditioning_clips OTHER utterances of its voice (cropped to the 6 s the decoder sees), so the conditioning
    encoder learns the voice rather than the words; the items of one voice in a batch share that conditioning.
    With alignment_weight > 0, the guided attention loss of `alignment.py` (the attention mass of a few heads that
    falls off the text's diagonal) is added, so the decoder learns to read the text in order sooner.
    """

    model: AutoregressiveConfig = field(
        default_factory=lambda: AutoregressiveConfig(layers=6, model_dim=256, heads=4, conditioning_attn_blocks=3,
                                                     dropout=0.1)
    )
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(steps=4500, learning_rate=6e-4, warmup_steps=100, weight_decay=0.01,
                                           eval_every=150, checkpoint_every=25, patience=4)
    )
    batch_size: int = 32
    text_loss_weight: float = 0.01
    alignment: AlignmentGuide = field(default_factory=AlignmentGuide)  # the heads the alignment guide reads
    alignment_weight: float = 1.0  # weight of its loss in training (0: only reported, as held-out off_diagonal)
    conditioning_clips: int = 3
    fix_tail_length: int = 3
    valid_items: int = 256  # held-out utterances scored at every evaluation


@dataclass(frozen=True)
class ClvpTrainConfig:
    """CLVP (a small `ClvpConfig`; its speech vocabulary is the codebook) trained contrastively on (text, codes).

    Each batch holds distinct sentences; the loss is the symmetric cross-entropy of the in-batch similarity matrix
    (the mean of the text->speech and speech->text losses), its scale exp(temperature) learned and clamped to at
    most max_logit_scale, as the CLAP trainers do. Codes are padded as candidates are at inference (stop, then the
    calm code and the fixed tail), to a random length of up to max_padding extra codes, so scores do not depend on
    how much padding a candidate carries; at inference candidates are scored with the model's score_padding, within
    that range. Evaluation: retrieval R@1 both ways on valid_pairs held-out pairs.
    """

    model: ClvpConfig = field(
        default_factory=lambda: ClvpConfig(dim_text=192, dim_speech=192, dim_latent=192, text_enc_depth=4, text_heads=3,
                                           speech_enc_depth=4, speech_heads=3, score_padding=32)
    )
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(steps=1200, learning_rate=5e-4, warmup_steps=100, weight_decay=0.01,
                                           eval_every=150, checkpoint_every=50, patience=4)
    )
    batch_size: int = 64
    initial_logit_scale: float = 14.3  # CLIP's 1/0.07; the original's exp(1) = 2.7 learned too slowly here (R@1 0.2)
    max_logit_scale: float = 100.0
    max_padding: int = 64
    valid_pairs: int = 200

    def __post_init__(self) -> None:
        padding = self.model.score_padding
        if padding is None or padding > self.max_padding:
            raise ValueError(
                f"model.score_padding must be set within the padding trained on (0..{self.max_padding}), got {padding}"
            )


@dataclass(frozen=True)
class ExportConfig:
    """How the export stores the weights: "float16" halves the folder (the bundled model must stay under 40 MB);
    loading restores float32 or the dtype asked for. "float32" keeps the trained values exactly.

    default_preset: the preset the exported folder names for callers that name none (`tortoise_clvp.json`). A small
    model trained here is heard best with ultra_fast_ddim (benchmarks/README.md, "Presets for the bundled model").
    """

    storage_dtype: str = "float16"
    default_preset: str = "ultra_fast_ddim"

    def __post_init__(self) -> None:
        from ..presets import PRESETS  # here, not at the top: the command line reads this module without torch

        if self.default_preset not in PRESETS:
            raise ValueError(f"unknown default preset {self.default_preset!r}; choose one of {', '.join(PRESETS)}")


TRAINED_STAGES = ("codes", "autoregressive", "clvp", "diffusion", "vocoder")  # the stages with a training loop
DEVICE_STAGES = ("autoregressive",)  # the stages that can train on an accelerator; the others train on the CPU


@dataclass(frozen=True)
class RecipeConfig:
    """The whole recipe, stage by stage."""

    seed: int = 1234
    init_dir: Optional[Path] = None  # a native model folder the model stages fine-tune from (None: from scratch)
    device: str = "cpu"  # where DEVICE_STAGES train (torch's names: cpu, cuda, cuda:1); see `with_device`
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    codes: CodesConfig = field(default_factory=CodesConfig)
    autoregressive: AutoregressiveTrainConfig = field(default_factory=AutoregressiveTrainConfig)
    clvp: ClvpTrainConfig = field(default_factory=ClvpTrainConfig)
    diffusion: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)
    vocoder: VocoderTrainConfig = field(default_factory=VocoderTrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def with_steps(self, stage: str, steps: int) -> "RecipeConfig":
        """This recipe with the training budget of model stage `stage` set to `steps` (raise it to train a finished
        run on; the run resumes from its checkpoint). ValueError for a stage that does not train a model."""
        if stage not in TRAINED_STAGES:
            raise ValueError(f"only a model stage has a step budget ({', '.join(TRAINED_STAGES)}); got {stage!r}")
        if steps < 1:
            raise ValueError(f"a step budget must be at least 1, got {steps}")
        settings = getattr(self, stage)
        return replace(self, **{stage: replace(settings, loop=replace(settings.loop, steps=steps))})

    def with_device(self, stage: str, device: str) -> "RecipeConfig":
        """This recipe training stage `stage` on `device`. ValueError for a stage that trains only on the CPU (the
        batches are the same on every device, drawn on the CPU; the recipe's `seed` gives the same batches)."""
        if device != "cpu" and stage not in DEVICE_STAGES:
            raise ValueError(f"only {', '.join(DEVICE_STAGES)} can train on {device!r} so far; {stage!r} trains on the cpu")
        return replace(self, device=device)

    @classmethod
    def smoke(cls) -> "RecipeConfig":
        """Every stage at toy scale: proves the recipe end to end in about two minutes on 2 cores."""
        full = cls()
        corpus = replace(
            full.corpus, train_sentences=16, valid_sentences=4, unseen_sentences=4, everyday_share=1.0,
            voices=SMOKE_VOICES, workers=1,
        )
        smoke_loop = LoopConfig(steps=3, learning_rate=1e-3, warmup_steps=1, eval_every=3, checkpoint_every=2)
        diffusion = replace(
            full.diffusion,
            model=DiffusionConfig(model_channels=32, num_layers=1, num_heads=2, prediction="v"),
            loop=replace(smoke_loop, ema_decay=0.9),
            batch_size=2,
            max_codes=16,
            valid_items=2,
            sampled_items=1,
            sample_steps=2,
            reference_clips=4,
        )
        vocoder = replace(
            full.vocoder,
            model=VocoderConfig(noise_dim=8, channel_size=4, dilations=(1,), kpnet_hidden_channels=8),
            loop=smoke_loop,
            batch_size=2,
            segment_frames=8,
            valid_clips=2,
        )
        codes = replace(
            full.codes,
            model=DvaeConfig(channels=16, res_blocks=1, codebook_size=32, code_dim=8),
            loop=smoke_loop,
            batch_size=4,
            crop_frames=32,
            valid_items=4,
        )
        autoregressive = replace(
            full.autoregressive,
            model=AutoregressiveConfig(layers=1, model_dim=32, heads=2, conditioning_attn_blocks=1, dropout=0.1),
            alignment=AlignmentGuide(layer=0, heads=1),
            loop=smoke_loop,
            batch_size=4,
            valid_items=4,
        )
        clvp = replace(
            full.clvp,
            model=ClvpConfig(dim_text=32, dim_speech=32, dim_latent=32, text_enc_depth=1, text_heads=2,
                             speech_enc_depth=1, speech_heads=2, dim_head=16, rotary_dim=8, score_padding=4),
            loop=smoke_loop,
            batch_size=4,
            max_padding=8,
            valid_pairs=4,
        )
        return replace(
            full, corpus=corpus, tokenizer=replace(full.tokenizer), codes=codes, autoregressive=autoregressive,
            clvp=clvp, diffusion=diffusion, vocoder=vocoder,
        )
