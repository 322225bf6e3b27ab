"""Spoken prompts: a WAV file or a microphone recording becomes a text prompt, offline.

    from seem.audio import transcribe
    from seem.prompts import PromptSet, Text

    phrase = transcribe("request.wav")                 # e.g. "the dog"
    [dog] = segmenter.segment(PromptSet(text=Text(phrase)))

Recognisers (nothing is ever downloaded):

- **Whisper** (``openai-whisper``), when it is installed *and* its weights are already on this machine: a file named
  by ``whisper_model`` / ``$SEEM_WHISPER_MODEL`` (a path or a model name), or else the first of
  ``WHISPER_PREFERENCE`` found in Whisper's download folder (``$XDG_CACHE_HOME/whisper``, default
  ``~/.cache/whisper``). The official SEEM demo uses Whisper ``base``.
- **PocketSphinx** (``pip install 'seem[audio]'``): its wheel carries a US-English acoustic model, a language model
  and a dictionary. Open-vocabulary recognition of short phrases is fair at best; with ``vocabulary`` (class
  names) it recognises one of those names (optionally after "the", "a", "an", "this", "that"), which is far more
  reliable for spoken object names. Words missing from its dictionary are left out of that grammar.

``engine="auto"`` picks Whisper when usable, else PocketSphinx.

Audio handling: WAV files (PCM 8/16/24/32-bit or float, any rate, any number of channels) are read with
``scipy.io.wavfile``; other formats (FLAC, OGG, ...) when ``soundfile`` is installed. Arrays are ``[N]`` or
``[N, C]`` (channels last); integer samples are scaled to [-1, 1]. Everything is mixed to mono and resampled to
16 kHz (``scipy.signal.resample_poly``). PocketSphinx additionally gets a fixed, seeded dither of 4 LSB (16-bit):
exact digital silence (as synthesised or gated audio contains) otherwise gives degenerate log-energy features and
garbles recognition.

Errors (``AudioError``, a ``ValueError``): missing / unreadable files, empty, too short or silent audio, no
recogniser available, nothing recognised.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
import sys
from collections.abc import Sequence
from functools import lru_cache
from math import gcd
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

__all__ = [
    "SAMPLE_RATE",
    "WHISPER_PREFERENCE",
    "AudioError",
    "Engine",
    "add_audio_args",
    "audio_to_text_arg",
    "available_engines",
    "find_whisper_weights",
    "load_audio",
    "record",
    "to_mono_16k",
    "transcribe",
]

SAMPLE_RATE = 16_000
"""The recognisers' input rate (Hz)."""
MIN_SECONDS = 0.1
"""Shorter audio is refused."""
WHISPER_PREFERENCE = (
    "base.en",
    "base",
    "small.en",
    "small",
    "tiny.en",
    "tiny",
    "turbo",
    "medium.en",
    "medium",
    "large-v3",
    "large-v2",
    "large-v1",
    "large",
)
"""Whisper models looked for in its download folder, first found first used."""
_ARTICLES = ("the", "a", "an", "this", "that")
_DITHER = 4.0 / 32768.0

Engine = Literal["auto", "pocketsphinx", "whisper"]


class AudioError(ValueError):
    """Audio that cannot be used, or no recogniser / no recognised speech."""


# --------------------------------------------------------------------------------------------------------
# reading and conversion


def load_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read an audio file → ``(samples float32 [N] or [N, C] in [-1, 1], sample rate)``.

    WAV via ``scipy.io.wavfile``; other formats through ``soundfile`` when it is installed.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise AudioError(f"audio file not found: {p}")
    if not p.is_file():
        raise AudioError(f"not a file: {p}")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: empty file")
    from scipy.io import wavfile

    try:
        with open(p, "rb") as f:
            head = f.read(12)
        if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", wavfile.WavFileWarning)
                rate, data = wavfile.read(p)
            return _to_float(np.asarray(data), str(p)), int(rate)
    except Exception as e:  # scipy raises ValueError, EOFError, even UnboundLocalError on broken headers
        raise AudioError(f"{p}: cannot read this WAV file: {e}") from e
    if importlib.util.find_spec("soundfile") is not None:
        import soundfile

        try:
            data, rate = soundfile.read(str(p), dtype="float32", always_2d=False)
        except Exception as e:
            raise AudioError(f"{p}: cannot read this audio file: {e}") from e
        return np.asarray(data, dtype=np.float32), int(rate)
    raise AudioError(f"{p}: not a WAV file (other formats need the soundfile package: pip install soundfile)")


def _to_float(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype == np.uint8:  # 8-bit WAV is unsigned, centred on 128
        return ((a.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if np.issubdtype(a.dtype, np.signedinteger):
        return (a.astype(np.float64) / float(-np.iinfo(a.dtype).min)).astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32)
    raise AudioError(f"{what}: unsupported sample type {a.dtype}")


def to_mono_16k(samples: Any, sample_rate: int) -> np.ndarray:
    """Samples ``[N]`` or ``[N, C]`` (channels last; int or float) at ``sample_rate`` → float32 ``[M]`` mono at
    16 kHz. Integer samples are scaled to [-1, 1]; channels are averaged; resampling is polyphase
    (``scipy.signal.resample_poly``, exact rational ratio)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
    try:
        a = np.asarray(samples)
    except Exception:
        raise AudioError(f"audio must be an array of samples, got {type(samples).__name__}") from None
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise AudioError(f"audio samples must be int or float, got dtype {a.dtype}")
    if a.ndim == 2:
        if a.shape[1] > 8 and a.shape[0] <= 8:
            raise AudioError(f"audio of shape {a.shape} looks channels-first; pass [N, C] (e.g. a.T)")
        if a.shape[1] > 8:
            raise AudioError(f"audio must be [N] or [N, C] with at most 8 channels, got shape {a.shape}")
    elif a.ndim != 1:
        raise AudioError(f"audio must be [N] or [N, C], got shape {a.shape}")
    x = _to_float(a, "audio")
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.size == 0:
        raise AudioError("the audio is empty (no samples)")
    if not np.isfinite(x).all():
        raise AudioError("the audio contains NaN or infinite samples")
    sr = int(sample_rate)
    if x.size / sr < MIN_SECONDS:
        raise AudioError(f"the audio is too short ({x.size / sr * 1000:.0f} ms; at least {MIN_SECONDS * 1000:.0f} ms)")
    if sr != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = gcd(SAMPLE_RATE, sr)
        x = resample_poly(x.astype(np.float64), SAMPLE_RATE // g, sr // g)
    return np.ascontiguousarray(x, dtype=np.float32)


def record(seconds: float = 4.0, sample_rate: int = SAMPLE_RATE, device: int | str | None = None) -> np.ndarray:
    """Record ``seconds`` from a microphone (``sounddevice``, installed with ``seem[audio]``) → float32 ``[N]`` at
    ``sample_rate``. ``AudioError`` when sounddevice, PortAudio or an input device is missing."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and 0 < seconds <= 600):
        raise AudioError(f"seconds must be in (0, 600], got {seconds!r}")
    try:
        import sounddevice
    except (ImportError, OSError) as e:
        raise AudioError(f"microphone recording needs sounddevice and PortAudio ({e}); record a WAV instead") from e
    try:
        data = sounddevice.rec(int(seconds * sample_rate), samplerate=sample_rate, channels=1, device=device)
        sounddevice.wait()
    except Exception as e:
        raise AudioError(f"cannot record from the microphone: {e}") from e
    return np.asarray(data, dtype=np.float32).reshape(-1)


# --------------------------------------------------------------------------------------------------------
# engines


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _whisper_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "whisper"


def _whisper_file(name: str) -> str:
    """The file name Whisper downloads model ``name`` to (``"turbo"`` → ``large-v3-turbo.pt``)."""
    try:
        import whisper

        url = getattr(whisper, "_MODELS", {}).get(name)
    except Exception:  # a broken install: fall back to the plain name
        url = None
    return os.path.basename(url) if isinstance(url, str) else f"{name}.pt"


def find_whisper_weights(model: str | os.PathLike[str] | None = None) -> Path | None:
    """The local Whisper weights to use, or None (Whisper missing, or no weights on this machine).

    ``model``: a ``.pt`` path or a model name (``"base"``, ``"small.en"``, ...); default
    ``$SEEM_WHISPER_MODEL``, else the first of ``WHISPER_PREFERENCE`` in Whisper's download folder. Never
    downloads: a named model that is not on disk gives None.
    """
    if not _has("whisper"):
        return None
    spec = model if model is not None else os.environ.get("SEEM_WHISPER_MODEL") or None
    root = _whisper_root()
    if spec is not None:
        p = Path(spec).expanduser()
        if p.is_file():
            return p
        cand = root / _whisper_file(str(spec))
        return cand if cand.is_file() else None
    for name in WHISPER_PREFERENCE:
        cand = root / _whisper_file(name)
        if cand.is_file():
            return cand
    return None


def available_engines() -> list[str]:
    """The recognisers usable now, best first (``"whisper"`` only with local weights)."""
    out = []
    if find_whisper_weights() is not None:
        out.append("whisper")
    if _has("pocketsphinx"):
        out.append("pocketsphinx")
    return out


@lru_cache(maxsize=2)
def _whisper_model(path: str) -> Any:
    import whisper

    return whisper.load_model(path)


def _transcribe_whisper(x: np.ndarray, model: str | os.PathLike[str] | None, language: str | None) -> str:
    weights = find_whisper_weights(model)
    if weights is None:
        want = model or os.environ.get("SEEM_WHISPER_MODEL") or "any of " + ", ".join(WHISPER_PREFERENCE[:4])
        raise AudioError(
            f"engine 'whisper' needs openai-whisper and its weights on this machine ({want} in {_whisper_root()} "
            "or a .pt path); seem never downloads them"
        )
    try:
        result = _whisper_model(str(weights)).transcribe(x, fp16=False, language=language)
    except Exception as e:
        raise AudioError(f"whisper failed on this audio: {e}") from e
    return str(result.get("text", "")).strip()


def _grammar_words(phrase: str) -> list[str]:
    """``"wall-other-merged"`` → ``["wall"]``; ``"traffic light"`` → ``["traffic", "light"]``."""
    p = phrase.lower().replace("-merged", "").replace("-other", "")
    return [w for w in re.split(r"[^a-z']+", p) if w]


def _jsgf(vocabulary: Sequence[str], known: Any) -> str | None:
    alts: list[str] = []
    for phrase in vocabulary:
        words = _grammar_words(phrase)
        if words and all(known(w) for w in words):
            alt = " ".join(words)
            if alt not in alts:
                alts.append(alt)
    if not alts:
        return None
    return (
        "#JSGF V1.0;\ngrammar seem;\n"
        f"public <prompt> = [{' | '.join(_ARTICLES)}] <thing>;\n"
        f"<thing> = ( {' | '.join(alts)} );\n"
    )


def _transcribe_pocketsphinx(x: np.ndarray, vocabulary: Sequence[str] | None) -> str:
    try:
        from pocketsphinx import Decoder
    except ImportError as e:
        raise AudioError("engine 'pocketsphinx' is not installed: pip install 'seem[audio]'") from e
    rng = np.random.default_rng(0)
    y = x.astype(np.float64) + rng.normal(0.0, _DITHER, x.shape)
    pcm = np.clip(np.rint(y * 32767.0), -32768, 32767).astype("<i2")
    dec = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")  # fresh: its live CMN adapts to each utterance
    if vocabulary is not None:
        grammar = _jsgf(vocabulary, dec.lookup_word)
        if grammar is not None:
            dec.add_jsgf_string("vocabulary", grammar)
            dec.activate_search("vocabulary")
    dec.start_utt()
    dec.process_raw(pcm.tobytes(), full_utt=True)
    dec.end_utt()
    hyp = dec.hyp()
    return "" if hyp is None else str(hyp.hypstr).strip()


def transcribe(
    source: str | os.PathLike[str] | np.ndarray,
    sample_rate: int | None = None,
    engine: Engine = "auto",
    *,
    vocabulary: Sequence[str] | None = None,
    language: str | None = "en",
    whisper_model: str | os.PathLike[str] | None = None,
) -> str:
    """Recognise speech in an audio file or array; returns the transcript (e.g. ``"the dog"``).

    Args:
        source: a path (WAV; more formats with ``soundfile``) or samples ``[N]`` / ``[N, C]`` (int or float).
        sample_rate: the rate of an array (Hz); required for arrays, must be None for files.
        engine: ``"auto"`` (Whisper when installed with local weights, else PocketSphinx), ``"pocketsphinx"`` or
            ``"whisper"``.
        vocabulary: phrases to choose from (e.g. the segmenter's class names); PocketSphinx then only recognises
            one of them, optionally after an article. Ignored by Whisper.
        language: Whisper's language (``None``: detect). PocketSphinx's model is US English.
        whisper_model: the Whisper weights (path or name, see ``find_whisper_weights``).

    Raises:
        AudioError: unreadable / empty / too short / silent audio, an unusable engine, no speech recognised.
    """
    if engine not in ("auto", "pocketsphinx", "whisper"):
        raise AudioError(f"engine must be 'auto', 'pocketsphinx' or 'whisper', got {engine!r}")
    if isinstance(source, (str, os.PathLike)):
        if sample_rate is not None:
            raise AudioError("sample_rate is read from the file; pass it only with an array")
        data, rate = load_audio(source)
        what = str(source)
    else:
        if sample_rate is None:
            raise AudioError("sample_rate (Hz) is required with an array of samples")
        data, rate, what = source, sample_rate, "the audio"
    x = to_mono_16k(data, rate)
    if float(np.max(np.abs(x))) < 1e-4:
        raise AudioError(f"{what} is silent")
    if vocabulary is not None and (isinstance(vocabulary, str) or not all(isinstance(v, str) for v in vocabulary)):
        raise AudioError("vocabulary must be a list of phrases (str)")
    if engine == "auto":
        engines = available_engines()
        if not engines:
            raise AudioError(
                "no speech recogniser is available: pip install 'seem[audio]' (PocketSphinx), or install "
                "openai-whisper and put its weights in ~/.cache/whisper"
            )
        engine = "whisper" if engines[0] == "whisper" else "pocketsphinx"
    if engine == "whisper":
        text = _transcribe_whisper(x, whisper_model, language)
    else:
        text = _transcribe_pocketsphinx(x, vocabulary)
    text = " ".join(text.split())
    if not text:
        raise AudioError(f"no speech recognised in {what} (engine {engine})")
    return text


# --------------------------------------------------------------------------------------------------------
# command line


def add_audio_args(parser: argparse.ArgumentParser) -> None:
    """``--audio``, ``--audio-engine``, ``--audio-seconds``, ``--audio-classes`` (for ``seem segment``)."""
    parser.add_argument(
        "--audio",
        default=None,
        metavar="WAV|mic",
        help="spoken referring text: a WAV file, or 'mic' to record from the microphone (replaces --text)",
    )
    parser.add_argument(
        "--audio-engine",
        choices=["auto", "pocketsphinx", "whisper"],
        default="auto",
        help="speech recogniser (default auto: Whisper if installed with local weights, else PocketSphinx)",
    )
    parser.add_argument(
        "--audio-seconds", type=float, default=4.0, help="length of a microphone recording (default 4 s)"
    )
    parser.add_argument(
        "--audio-classes",
        action="store_true",
        help="recognise one of the class names only (--classes, default COCO); more reliable with PocketSphinx",
    )


def audio_to_text_arg(args: argparse.Namespace) -> None:
    """Turn ``args.audio`` into ``args.text`` (no-op without ``--audio``); prints what was heard to stderr.

    Raises ``AudioError`` (a ``ValueError``) for ``--audio`` together with ``--text`` and every audio problem.
    """
    audio = getattr(args, "audio", None)
    if audio is None:
        return
    if getattr(args, "text", None):
        raise AudioError("give --audio or --text, not both")
    engine = getattr(args, "audio_engine", "auto") or "auto"
    if engine not in ("auto", "pocketsphinx", "whisper"):
        raise AudioError(f"--audio-engine must be auto, pocketsphinx or whisper, got {engine!r}")
    vocabulary: list[str] | None = None
    if getattr(args, "audio_classes", False):
        classes = getattr(args, "classes", None)
        if classes:
            vocabulary = [c.strip() for c in classes.split(",") if c.strip()]
        else:
            from seem.vocabulary import coco_panoptic_categories

            vocabulary = [c["name"] for c in coco_panoptic_categories()]
    if str(audio).lower() in ("mic", "microphone"):
        x = record(float(getattr(args, "audio_seconds", 4.0)))
        text = transcribe(x, SAMPLE_RATE, cast(Engine, engine), vocabulary=vocabulary)
    else:
        text = transcribe(audio, engine=cast(Engine, engine), vocabulary=vocabulary)
    print(f"heard: {text!r}", file=sys.stderr)
    args.text = text
