"""The bundled voices: the training corpus's synthetic voices (Piper and espeak-ng), one folder of clips per voice,
held-out ones included (see README.md here).

Installed as the data package ``tortoise_clvp.bundled_voices`` (pyproject.toml maps this folder), so
``tortoise_clvp.voices`` finds them through ``importlib.resources`` in a wheel install as in a checkout.
"""
