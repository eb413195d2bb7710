"""The HTTP server (`clvp-tts serve`): OpenAI's speech API with cross-request batching, voices, metrics, a web page.

Import `tortoise_clvp.serve.app` for `create_app`; this package module stays light so the command line's help does
not pull in FastAPI or torch.
"""
