"""Checkpoint formats: the original Tortoise .pth files, Hugging Face's CLVP layout and our native safetensors."""
