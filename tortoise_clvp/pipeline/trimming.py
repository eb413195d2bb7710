"""What happens to candidates between sampling and scoring, and to latents before diffusion.

Every function takes the decoder's special ids (`model.config.tokens`): stop, calm and the fixed tail belong to a
model's codebook (`TOKENS` for the released one).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import TokenIds


def fix_speech_decoder_output(codes: Tensor, tokens: TokenIds) -> Tensor:
    """The original's clean-up of padded candidates, on a copy.

    In each row that contains the stop token, every position from the first stop on becomes the calm
    token, and the row's last positions become the fixed tail (45, 45, 248 in the release) — even when the stop
    came later than that. Rows without a stop are returned unchanged. codes: (N, L) -> (N, L).
    """
    fixed = codes.clone()
    is_stop = fixed == tokens.mel_stop
    has_stop = is_stop.any(dim=1)
    after_stop = is_stop.cumsum(dim=1) > 0
    fixed[after_stop] = tokens.calm
    tail = torch.tensor(tokens.fix_tail, dtype=fixed.dtype, device=fixed.device)
    fixed[has_stop, -len(tokens.fix_tail) :] = tail
    return fixed


def scoring_span(codes: Tensor, tokens: TokenIds, padding: int | None) -> Tensor:
    """Raw candidates (N, L) cut to the positions CLVP scores (see `ClvpConfig.score_padding`): all L when padding is
    None; else the longest candidate's codes, its stop, room for the fixed tail and `padding` more (at most L)."""
    if padding is None:
        return codes
    length = int(speech_lengths(codes, tokens).max()) + 1 + len(tokens.fix_tail) + padding
    return codes[:, : min(length, codes.shape[1])]


def speech_lengths(codes: Tensor, tokens: TokenIds) -> Tensor:
    """Tokens before the first stop token in each row of raw candidates (N, L) -> (N,)."""
    is_stop = codes == tokens.mel_stop
    first = is_stop.int().argmax(dim=1)
    return torch.where(is_stop.any(dim=1), first, torch.full_like(first, codes.shape[1]))


def calm_trim_length(codes: Tensor, tokens: TokenIds) -> int:
    """Latent frames to keep for one fixed candidate (L,): up to, not including, the 9th calm token in a row.

    The diffusion decoder gets 8 calm frames of "breathing room" to end the speech, as in the original;
    any natural run of 9 calm tokens also triggers the cut. With no such run, all frames are kept.
    """
    run = 0
    for index, code in enumerate(codes.tolist()):
        run = run + 1 if code == tokens.calm else 0
        if run == tokens.calm_run_to_trim:
            return index
    return codes.shape[0]
