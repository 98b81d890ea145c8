"""Where exported models are found, and which encoder a new keyword set gets by default.

The default encoder is chosen by the streaming benchmark (docs/benchmarks.md): Whisper base's
encoder cut at layer 5, int8, made on this machine by ``python -m export whisper-base --layer 5
--int8`` (an explicit step of the README's set-up command: nothing is downloaded behind the user's
back). Where it has not been made, Google's speech_embedding (``python -m export
speech-embedding``) is next, then MFCC-13 (built in); the user is told how to get the better one.

A model named without a path (``whisper-base``, ``speech-embedding``) is looked for in
``$KWSSTREAM_MODELS`` when that is set (and only there), else in ``./models`` and then in the
``models/`` folder of the source checkout kwsstream runs from.
"""

from __future__ import annotations

import os
from pathlib import Path

MODELS_ENV = "KWSSTREAM_MODELS"
DEFAULT_ENCODER = "whisper-base"
"""The encoder of a new keyword set when none is named (``--encoder``), where it has been made."""
NEXT_ENCODERS = ("speech-embedding",)
"""Where the default has not been made: these, in order, then :data:`FALLBACK_ENCODER`."""
FALLBACK_ENCODER = "mfcc"
MAKE_COMMANDS = {"whisper-base": "python -m export whisper-base --layer 5 --int8",
                 "speech-embedding": "python -m export speech-embedding"}
"""The command (from the source checkout) that makes each named model."""
MAKE_DEFAULT = MAKE_COMMANDS[DEFAULT_ENCODER]
NAMED_MODELS = {"whisper-base": "whisper-base-L5-int8.onnx", "speech-embedding": "speech-embedding.onnx"}
"""Model names a user may give instead of a path, and their file names."""


def model_folders() -> list[Path]:
    """Folders searched for a named model, in order."""
    if os.environ.get(MODELS_ENV):
        return [Path(os.environ[MODELS_ENV])]
    return [Path("models"), Path(__file__).resolve().parents[1] / "models"]


def find_model(name: str) -> Path | None:
    """The file of a named model (:data:`NAMED_MODELS`), or ``None`` where it has not been made."""
    file = NAMED_MODELS.get(name)
    if file is None:
        return None
    return next((folder / file for folder in model_folders() if (folder / file).is_file()), None)


def default_encoder_spec() -> tuple[str, str | None]:
    """The encoder spec a new keyword set gets, and a note for the user when it had to fall back
    (``None`` when the default is there)."""
    for name in (DEFAULT_ENCODER, *NEXT_ENCODERS):
        path = find_model(name)
        if path is not None:
            break
    if path is not None and name == DEFAULT_ENCODER:
        return str(path), None
    used = str(path) if path is not None else FALLBACK_ENCODER
    return used, (f"the default encoder ({DEFAULT_ENCODER}, the best on real speech) has not been made: using "
                  f"{name if path is not None else FALLBACK_ENCODER}; run '{MAKE_DEFAULT}' in the kwsstream "
                  "checkout to get it")
