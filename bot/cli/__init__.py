"""``python -m bot generate``: make or edit a picture through the operator's relay.

Contract (admins and scripts rely on it):

    python -m bot generate PROMPT [--image PATH]... [--model ID] [--aspect-ratio R]
                                  [--size S] [--out PATH] [--json] [--session PATH]
                                  [--relay-url URL] [--format F] [--auth A]

- The relay comes from ``NB_RELAY_URL`` / ``NB_RELAY_FORMAT`` / ``NB_RELAY_AUTH`` /
  ``NB_API_KEY`` (and an optional ``.env``); the flags override all but the key, which is
  only ever read from the environment. Operator relays are trusted (loopback included).
- Exit codes: 0 picture written; 2 invalid input, nothing sent; 3 the relay answered without
  a picture (reason and the model's own words are printed); 4 the relay failed after retries
  (HTTP status and the relay's message, key redacted). 1 only for a local failure after the
  picture was made (the output file could not be written) or a bug in this program.
- Human messages go to stderr; stdout carries the written path, or with ``--json`` one JSON
  object as the last line (``path``, ``mime_type``, ``width``, ``height``, ``model``,
  ``elapsed_s``, ``text``, ``usage``, ``sources``...; on failure ``ok: false`` with the error).
- ``--session PATH`` keeps the conversation in a JSON file; when it exists the prompt
  continues it (Gemini: the exact previous turns, thought signatures included; other
  formats: the latest picture + the new instruction).

Environment knobs besides the relay (mainly for tests and slow relays):
``NB_RETRY_ATTEMPTS`` (default 4), ``NB_RETRY_BACKOFF`` (first backoff in seconds, default 1),
``NB_RETRY_MAX_BACKOFF`` (cap, also on Retry-After, default 60), ``NB_RELAY_TIMEOUT``
(seconds per attempt instead of the size-based default), ``NB_MODEL`` (default model),
``NB_MODEL_ALIASES`` (``catalogue-id=relay-name,...``), ``NB_LOCALE`` (``en``/``zh-CN``;
else taken from ``LANG``).
"""

from .command import main

__all__ = ["main"]
