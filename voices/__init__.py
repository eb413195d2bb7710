"""The bundled voices: synthetic espeak-ng clips, one folder per voice (see README.md here).

Installed as the data package ``tortoise_clvp.bundled_voices`` (pyproject.toml maps this folder), so
``tortoise_clvp.voices`` finds them through ``importlib.resources`` in a wheel install as in a checkout.
"""
