"""Training our own small Tortoise: corpus, tokenizers, speech codes, decoder, CLVP, diffusion, vocoder, export."""
