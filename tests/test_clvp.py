"""CLVP: golden parity with the original (models/clvp_tiny), live parity with transformers' CLVP,
full-size key coverage on the meta device, and clear errors for bad files.

Every size comes from the reference folder's JSON, so another folder (CLVP_REFERENCE_DIR) with other
sizes, depths or head counts runs the same tests.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import read_json, read_tensors

from tortoise_clvp.config import ClvpConfig
from tortoise_clvp.errors import CheckpointError
from tortoise_clvp.models.clvp import ClvpModel
from tortoise_clvp.weights.hf_clvp import (
    clvp_config_from_hf,
    clvp_hf_key_map,
    clvp_state_from_hf,
    load_clvp_hf,
)
from tortoise_clvp.weights.strict import (
    check_state_dict,
    load_strict,
    read_torch_checkpoint,
)
from tortoise_clvp.weights.original_clvp import (
    clvp_config_from_original_kwargs,
    clvp_config_from_state,
    clvp_key_map,
    clvp_rotary_buffer_keys,
    clvp_state_from_original,
    load_clvp_original,
)

TOL = dict(atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Golden parity with the original (models/clvp_tiny)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clvp_dir(reference_dir):
    return reference_dir / "models" / "clvp_tiny"


@pytest.fixture(scope="module")
def tiny_config(clvp_dir) -> ClvpConfig:
    return clvp_config_from_original_kwargs(read_json(clvp_dir / "config.json")["kwargs"])


@pytest.fixture(scope="module")
def tiny_model(clvp_dir, tiny_config) -> ClvpModel:
    return load_clvp_original(clvp_dir / "clvp.pth", tiny_config)


@pytest.fixture(scope="module")
def cases(clvp_dir):
    return read_tensors(clvp_dir / "cases.safetensors")


def test_config_read_from_shapes_matches_constructor_kwargs(clvp_dir, tiny_config):
    inferred = clvp_config_from_state(read_torch_checkpoint(clvp_dir / "clvp.pth"))
    # sequence lengths are not stored in the file (and unused by the model)
    inferred = dataclasses.replace(
        inferred, text_seq_len=tiny_config.text_seq_len, speech_seq_len=tiny_config.speech_seq_len
    )
    assert inferred == tiny_config


@torch.inference_mode()
def test_golden_similarity_and_unnormalised_latents(tiny_model, cases):
    text, codes = cases["in.text"], cases["in.speech_tokens"]
    torch.testing.assert_close(tiny_model.text_latents(text), cases["out.text_latent_unnormalized"], **TOL)
    torch.testing.assert_close(tiny_model.speech_latents(codes), cases["out.speech_latent_unnormalized"], **TOL)
    torch.testing.assert_close(tiny_model.similarity(text, codes), cases["out.similarity"], **TOL)
    torch.testing.assert_close(tiny_model(text, codes), cases["out.similarity"], **TOL)
    torch.testing.assert_close(tiny_model.temperature.reshape(1), cases["out.temperature_param"], **TOL)


@torch.inference_mode()
def test_golden_long_case(tiny_model, cases):
    codes = cases["in.speech_tokens_long"]
    text = cases["in.text"][: codes.shape[0]]
    torch.testing.assert_close(tiny_model.similarity(text, codes), cases["out.similarity_long"], **TOL)


@torch.inference_mode()
def test_score_broadcasts_one_text_against_many_candidates(tiny_model, cases):
    """score(text_latent (1, L), speech_latents (N, L)) reproduces the row-wise similarity and the original loss."""
    text, codes = cases["in.text"], cases["in.speech_tokens"]
    text_latents, speech_latents = tiny_model.text_latents(text), tiny_model.speech_latents(codes)
    matrix = torch.stack([tiny_model.score(text_latents[i : i + 1], speech_latents) for i in range(len(text))])
    torch.testing.assert_close(matrix.diagonal(), cases["out.similarity"], **TOL)
    labels = torch.arange(len(text))
    loss = (F.cross_entropy(matrix, labels) + F.cross_entropy(matrix.t(), labels)) / 2
    torch.testing.assert_close(loss.reshape(1), cases["out.loss"], **TOL)
    # a 1-D text latent and a repeated text give the same scores
    repeated = tiny_model.similarity(text[:1].expand(len(codes), -1), codes)
    torch.testing.assert_close(tiny_model.score(text_latents[0], speech_latents), repeated, **TOL)


@torch.inference_mode()
def test_loading_without_config_reads_sizes_from_the_file(clvp_dir, cases):
    model = load_clvp_original(read_torch_checkpoint(clvp_dir / "clvp.pth"))
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(
        model.similarity(cases["in.text"], cases["in.speech_tokens"]), cases["out.similarity"], **TOL
    )


@torch.inference_mode()
def test_other_sizes_round_trip_through_the_original_layout():
    """Width != heads * 64, odd and unequal depths, other vocabularies: key map and shape reading handle them."""
    config = ClvpConfig(
        dim_text=96, dim_speech=80, dim_latent=48, num_text_tokens=50, text_enc_depth=3, text_heads=3,
        num_speech_tokens=120, speech_enc_depth=1, speech_heads=1,
    )
    torch.manual_seed(0)
    model = ClvpModel(config).eval()
    to_original = {ours: original for original, ours in clvp_key_map(config).items()}
    state = {to_original[key]: tensor.clone() for key, tensor in model.state_dict().items()}
    loaded = load_clvp_original(state)
    assert loaded.config == config
    text, codes = torch.randint(0, 50, (2, 9)), torch.randint(0, 120, (2, 33))
    torch.testing.assert_close(loaded.similarity(text, codes), model.similarity(text, codes), atol=0, rtol=0)


def test_score_padding_round_trips_and_is_checked():
    config = ClvpConfig(score_padding=32)
    assert ClvpConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert ClvpConfig.RELEASED.score_padding is None  # the original scores every sampled position
    with pytest.raises(ValueError, match="score_padding"):
        ClvpConfig(score_padding=-1)


def test_out_of_range_ids_are_refused(tiny_model, cases):
    codes = cases["in.speech_tokens"].clone()
    codes[0, -1] = tiny_model.config.num_speech_tokens + 1  # an unfixed stop token, say
    with pytest.raises(ValueError, match="outside"):
        tiny_model.speech_latents(codes)
    with pytest.raises(ValueError, match="batch sizes differ"):
        tiny_model.similarity(cases["in.text"][:1], cases["in.speech_tokens"])


# ---------------------------------------------------------------------------------------------------------------
# Full-size key coverage (meta device, no weights)
# ---------------------------------------------------------------------------------------------------------------


def _meta_state(keys: list[dict]) -> dict[str, torch.Tensor]:
    return {entry["key"]: torch.empty(entry["shape"], device="meta") for entry in keys}


def _meta_model(config: ClvpConfig) -> ClvpModel:
    with torch.device("meta"):
        return ClvpModel(config)


def test_full_size_clvp2_keys_cover_the_model(reference_dir):
    listing = read_json(reference_dir / "keys" / "clvp2.json")
    config = clvp_config_from_original_kwargs(listing["kwargs"])
    assert config == ClvpConfig.RELEASED
    state = _meta_state(listing["keys"])
    assert len(state) == listing["n_tensors"]
    inferred = clvp_config_from_state(state)
    assert inferred == ClvpConfig.RELEASED

    mapped = clvp_state_from_original(state, config)
    model = _meta_model(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_state_dict(expected, mapped, "clvp2.json")  # every model key covered, every shape right
    assert len(mapped) == len(state) - len(clvp_rotary_buffer_keys())  # only the rotary buffers are dropped
    assert set(clvp_key_map(config)) | set(clvp_rotary_buffer_keys()) == set(state)
    assert sum(p.numel() for p in model.parameters()) == listing["n_parameters"]
    load_strict(model, mapped, "clvp2.json")


def _hf_default_with_released_speech_vocab(reference_dir):
    listing = read_json(reference_dir / "keys" / "hf_clvp_default.json")
    speech_vocab = ClvpConfig.RELEASED.num_speech_tokens
    keys = []
    for entry in listing["keys"]:
        if entry["key"] == "speech_encoder_model.token_embedding.weight":
            assert entry["shape"][0] == 256  # transformers' ClvpConfig() default (README)
            entry = {**entry, "shape": [speech_vocab, entry["shape"][1]]}
        keys.append(entry)
    config_dict = json.loads(json.dumps(listing["config_dict"]))
    config_dict["speech_config"]["vocab_size"] = speech_vocab
    return listing, keys, config_dict


def test_full_size_hf_keys_cover_the_model(reference_dir):
    listing, keys, config_dict = _hf_default_with_released_speech_vocab(reference_dir)
    config = clvp_config_from_hf(config_dict)
    released = ClvpConfig.RELEASED
    # HF's config has no sequence lengths (unused by the model anyway)
    assert config == dataclasses.replace(
        released, text_seq_len=config.text_seq_len, speech_seq_len=config.speech_seq_len
    )

    state = _meta_state(keys)  # the whole ClvpModelForConditionalGeneration: decoder keys are skipped
    mapped = clvp_state_from_hf(state, config)
    model = _meta_model(config)
    check_state_dict({k: v.shape for k, v in model.state_dict().items()}, mapped, "hf_clvp_default.json")
    clvp_keys = {k for k in state if k.startswith(("text_encoder_model.", "speech_encoder_model.", "logit_scale"))}
    assert set(clvp_hf_key_map(config)) | {k for k in clvp_keys if k.endswith("inv_freq")} == clvp_keys


def test_hf_default_speech_vocab_gives_a_hint(reference_dir):
    listing, keys, _ = _hf_default_with_released_speech_vocab(reference_dir)
    with pytest.raises(CheckpointError, match=r"(?s)speech_encoder_model\.token_embedding\.weight.*vocab_size=256"):
        load_clvp_hf(_meta_state(keys), listing["config_dict"])


def test_original_and_hf_key_maps_follow_the_reference_mapping(reference_dir):
    mapping = read_json(reference_dir / "keys" / "hf_clvp_mapping.json")["mapping"]
    config = ClvpConfig.RELEASED
    ours_from_original, ours_from_hf = clvp_key_map(config), clvp_hf_key_map(config)
    rows = [row for row in mapping if row["source"] == "clvp2.pth"]
    assert len(rows) == read_json(reference_dir / "keys" / "clvp2.json")["n_tensors"]
    for row in rows:
        if row["key"] in clvp_rotary_buffer_keys():
            assert row["hf_key"].endswith("rotary_pos_emb.inv_freq")
            continue
        assert ours_from_original[row["key"]] == ours_from_hf[row["hf_key"]], row


# ---------------------------------------------------------------------------------------------------------------
# Live parity with transformers' ClvpModelForConditionalGeneration
# ---------------------------------------------------------------------------------------------------------------


def _tiny_hf_model():
    transformers = pytest.importorskip("transformers")
    # heads of 64 (hidden / heads) and rotary width max(96 // (2 * 2), 32) = 32, as the original has
    encoder = dict(
        hidden_size=128, intermediate_size=256, projection_dim=96, num_hidden_layers=2, num_attention_heads=2
    )
    config = transformers.ClvpConfig(
        text_config=dict(vocab_size=256, **encoder),
        # HF's default speech vocabulary is 256; set it explicitly (the released model has 8192)
        speech_config=dict(vocab_size=700, **encoder),
        decoder_config=dict(
            hidden_size=64, num_hidden_layers=1, num_attention_heads=2, num_mel_attn_blocks=1,
            max_position_embeddings=64, max_text_tokens=40,
        ),
    )
    torch.manual_seed(1234)
    model = transformers.ClvpModelForConditionalGeneration(config).eval()
    # HF's init (embeddings std 0.02, unit norms, zero biases) would leave constant parameters untested, and its
    # RMSNorm adds eps=1e-5 under the root where the original clamps at 1e-8: at the 0.02 scale that alone moves
    # the latents by ~2%. Redraw the CLVP part at realistic scales so the two definitions agree to ~1e-6.
    generator = torch.Generator().manual_seed(4321)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith(("text_encoder_model.", "speech_encoder_model.", "logit_scale")):
                continue
            noise = torch.randn(param.shape, generator=generator)
            if "embedding" in name:
                param.copy_(noise)
            elif name.endswith("bias") or name == "logit_scale":
                param.copy_(0.1 * noise)
            elif "norm" in name:
                param.copy_(1 + 0.1 * noise)
            else:  # linear weights (out, in)
                param.copy_(noise / param.shape[1] ** 0.5)
    return model


@pytest.fixture(scope="module")
def hf_model():
    return _tiny_hf_model()


@pytest.fixture(scope="module")
def hf_inputs(hf_model):
    generator = torch.Generator().manual_seed(99)
    text = torch.randint(0, hf_model.config.text_config.vocab_size, (3, 21), generator=generator)
    codes = torch.randint(0, hf_model.config.speech_config.vocab_size, (3, 47), generator=generator)
    return text, codes


@torch.inference_mode()
def _hf_reference(hf_model, text, codes):
    """HF's features and the similarity HF's forward()/generate() compute from them.

    Input conventions (transformers 5.x): get_text_features / get_speech_features run the encoders on the ids as
    given, adding no bos/eos (only generate() appends the text eos 0, as Tortoise's tts() appends one 0).
    get_text_features returns a ClvpEncoderOutput whose `.embeds` is the UNnormalised projection;
    get_speech_features(speech_ids=...) returns that projection as a bare tensor. forward()/generate() then
    L2-normalise both and multiply by logit_scale.exp() (the original's exp(temperature)); forward() needs the
    decoder to make speech ids, so the per-row similarity is formed here from the features exactly as they do.
    """
    text_features = hf_model.get_text_features(input_ids=text)
    text_features = text_features.embeds if hasattr(text_features, "embeds") else text_features
    speech_features = hf_model.get_speech_features(speech_ids=codes)
    logits_per_text = (
        F.normalize(text_features, dim=-1) @ F.normalize(speech_features, dim=-1).t() * hf_model.logit_scale.exp()
    )
    return text_features, speech_features, logits_per_text.diagonal()


def _assert_matches_hf(model, hf_model, text, codes):
    text_features, speech_features, similarity = _hf_reference(hf_model, text, codes)
    with torch.inference_mode():
        torch.testing.assert_close(model.text_latents(text), text_features, **TOL)
        torch.testing.assert_close(model.speech_latents(codes), speech_features, **TOL)
        torch.testing.assert_close(model.similarity(text, codes), similarity, **TOL)


def test_hf_parity_from_state_dict(hf_model, hf_inputs):
    model = load_clvp_hf(hf_model.state_dict(), hf_model.config.to_dict())
    assert model.config.num_speech_tokens == hf_model.config.speech_config.vocab_size
    _assert_matches_hf(model, hf_model, *hf_inputs)
    # without a config the sizes come from the shapes (heads of 64 assumed: right here)
    _assert_matches_hf(load_clvp_hf(hf_model.state_dict()), hf_model, *hf_inputs)


def test_hf_parity_from_saved_folder(hf_model, hf_inputs, tmp_path):
    hf_model.save_pretrained(tmp_path)  # config.json + model.safetensors
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()
    _assert_matches_hf(load_clvp_hf(tmp_path), hf_model, *hf_inputs)
    _assert_matches_hf(load_clvp_hf(tmp_path / "model.safetensors"), hf_model, *hf_inputs)


def test_hf_config_the_model_cannot_express_is_refused(hf_model):
    config = hf_model.config.to_dict()
    config["text_config"]["use_attention_bias"] = True
    with pytest.raises(CheckpointError, match="use_attention_bias"):
        clvp_config_from_hf(config)


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def tiny_state(clvp_dir):
    return read_torch_checkpoint(clvp_dir / "clvp.pth")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_clvp_original(tmp_path / "clvp2.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_clvp_hf(tmp_path / "nothing_here")


def test_corrupt_file(tmp_path):
    junk = tmp_path / "clvp2.pth"
    junk.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).tolist()))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_clvp_original(junk)
    junk_st = tmp_path / "model.safetensors"
    shutil.copy(junk, junk_st)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_clvp_hf(junk_st)


def test_truncated_file(clvp_dir, tmp_path, hf_model):
    data = (clvp_dir / "clvp.pth").read_bytes()
    truncated = tmp_path / "clvp2.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_clvp_original(truncated)
    hf_model.save_pretrained(tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_clvp_hf(tmp_path / "hf")


def test_removed_key_is_listed(tiny_state, tiny_config):
    removed = "speech_transformer.transformer.attn_layers.layers.0.1.wrap.to_k.weight"
    del tiny_state[removed]
    for config in (tiny_config, None):
        with pytest.raises(CheckpointError, match=r"missing keys \(1\): " + removed.replace(".", r"\.")):
            load_clvp_original(tiny_state, config)


def test_extra_key_is_listed(tiny_state, tiny_config):
    tiny_state["text_transformer.transformer.project_out.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): text_transformer\.transformer\.project_out"):
        load_clvp_original(tiny_state, tiny_config)


def test_wrong_shape_is_listed(clvp_dir, tiny_state, tiny_config):
    rows, cols = tiny_state["to_speech_latent.weight"].shape
    tiny_state["to_speech_latent.weight"] = torch.zeros(rows + 1, cols)
    listed = rf"mis-shaped keys \(1\): to_speech_latent\.weight \[{rows + 1}, {cols}\]"
    with pytest.raises(CheckpointError, match=listed):
        load_clvp_original(tiny_state, tiny_config)
    # a config that does not fit the file: the affected keys are listed
    with pytest.raises(CheckpointError, match=r"mis-shaped keys \(2\): to_speech_latent\.weight .*to_text_latent"):
        load_clvp_original(clvp_dir / "clvp.pth", dataclasses.replace(tiny_config, dim_latent=7))


def test_wrong_rotary_buffer_is_refused(tiny_state, tiny_config):
    key = clvp_rotary_buffer_keys()[0]
    tiny_state[key] = tiny_state[key] * 2
    with pytest.raises(CheckpointError, match="rotary"):
        load_clvp_original(tiny_state, tiny_config)


def test_checkpoint_for_another_slot(reference_dir, tmp_path, hf_model, clvp_dir):
    ar = reference_dir / "models" / "ar_tiny" / "autoregressive.pth"
    with pytest.raises(CheckpointError, match=r"not a CLVP checkpoint.*autoregressive\.pth"):
        load_clvp_original(ar)
    with pytest.raises(CheckpointError, match=r"not a Hugging Face CLVP checkpoint.*autoregressive\.pth"):
        load_clvp_hf(ar)
    # the original file given to the HF loader and the HF layout given to the original loader point at each other
    with pytest.raises(CheckpointError, match="load_clvp_original"):
        load_clvp_hf(clvp_dir / "clvp.pth")
    with pytest.raises(CheckpointError, match="load_clvp_hf"):
        load_clvp_original(hf_model.state_dict())
    # a wrapped file (like vocoder.pth's {'model_g': ...})
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model_g": {"conv_pre.weight": torch.zeros(2, 2)}}, wrapped)
    with pytest.raises(CheckpointError, match="not a CLVP checkpoint.*wrapper"):
        load_clvp_original(wrapped)
