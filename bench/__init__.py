"""Benchmark: how this project's relay client swallows large image answers, side by side with
the google-genai SDK and a naive httpx client. Run ``python -m bench`` (``--help`` for options).
"""
