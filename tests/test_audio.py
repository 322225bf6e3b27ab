"""Spoken prompts (``seem.audio``): speech made offline with espeak-ng, recognised with PocketSphinx.

Skipped with a reason when ``espeak-ng`` (Debian: ``apt-get install -y espeak-ng``) or ``pocketsphinx``
(``pip install 'seem[audio]'``) is missing. Synthetic speech is recognised imperfectly, so the recognition tests
ask for most phrases of a set, not all; each phrase and the voice were chosen because they are recognised
today. Also covered without a recogniser: reading (WAV 8/16/32-bit and float, stereo), resampling, the errors,
Whisper's detection (never a download), and the ``--audio`` command-line hook.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.io import wavfile

from seem import audio
from seem.audio import AudioError, add_audio_args, audio_to_text_arg, load_audio, to_mono_16k, transcribe
from seem.prompts import PromptSet, Text

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
HAVE_SPHINX = importlib.util.find_spec("pocketsphinx") is not None
needs_speech = pytest.mark.skipif(
    not (HAVE_ESPEAK and HAVE_SPHINX),
    reason="needs espeak-ng (apt-get install -y espeak-ng) and pocketsphinx (pip install 'seem[audio]')",
)


def speak(text: str, path: Path) -> Path:
    """``text`` spoken by espeak-ng (US English voice) into a 22.05 kHz 16-bit mono WAV."""
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.fixture(autouse=True)
def _no_whisper(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests see no Whisper weights unless they put some there (the user's cache is not consulted)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SEEM_WHISPER_MODEL", raising=False)


# ----------------------------------------------------------------------------------------------------------
# recognition


@needs_speech
def test_open_vocabulary_transcripts(tmp_path: Path) -> None:
    phrases = {"the dog": "dog", "the train": "train", "the boat": "boat", "the bottle": "bottle"}
    heard = {p: transcribe(speak(p, tmp_path / f"{i}.wav")) for i, p in enumerate(phrases)}
    hits = [p for p, word in phrases.items() if word in heard[p].split()]
    assert len(hits) >= 3, heard
    assert heard["the dog"].split()[-1] == "dog", heard


@needs_speech
def test_vocabulary_grammar_recognises_class_names(tmp_path: Path) -> None:
    from seem.vocabulary import coco_panoptic_categories

    names = [c["name"] for c in coco_panoptic_categories()]
    phrases = {"the person": "person", "a cat": "cat", "dog": "dog", "the laptop": "laptop", "a truck": "truck"}
    phrases |= {"the umbrella": "umbrella"}
    heard = {p: transcribe(speak(p, tmp_path / f"{i}.wav"), vocabulary=names) for i, p in enumerate(phrases)}
    hits = [p for p, word in phrases.items() if word in heard[p].split()]
    assert len(hits) >= 5, heard
    assert "person" in heard["the person"].split(), heard
    # the transcript is a text prompt
    assert PromptSet(text=Text(heard["the person"])).text is not None


@needs_speech
def test_array_input_any_rate_and_channels(tmp_path: Path) -> None:
    rate, data = wavfile.read(speak("the dog", tmp_path / "d.wav"))
    stereo = np.stack([data, data], axis=1)
    assert "dog" in transcribe(stereo, sample_rate=rate, engine="pocketsphinx").split()
    f32 = data.astype(np.float32) / 32768.0
    up = to_mono_16k(f32, rate)
    assert "dog" in transcribe(up, sample_rate=16000).split()


@needs_speech
def test_silence_gives_no_speech_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = (rng.normal(0, 0.001, 16000)).astype(np.float32)  # 1 s of faint noise, no speech
    with pytest.raises(AudioError, match=r"no speech recognised|silent"):
        transcribe(noise, sample_rate=16000, vocabulary=["dog"])


# ----------------------------------------------------------------------------------------------------------
# reading, conversion, errors (no recogniser needed)


def test_wav_formats_and_resampling(tmp_path: Path) -> None:
    t = np.arange(8000) / 8000.0
    tone = np.sin(2 * np.pi * 440 * t)
    for dtype, scale in ((np.int16, 32767), (np.int32, 2**31 - 1), (np.float32, 1.0)):
        p = tmp_path / f"{np.dtype(dtype).name}.wav"
        wavfile.write(p, 8000, (tone * 0.5 * scale).astype(dtype))
        x, rate = load_audio(p)
        assert rate == 8000 and x.dtype == np.float32 and abs(float(np.abs(x).max()) - 0.5) < 1e-3
    p8 = tmp_path / "u8.wav"
    wavfile.write(p8, 8000, np.clip(np.rint(tone * 60 + 128), 0, 255).astype(np.uint8))
    x8, _ = load_audio(p8)
    assert abs(float(x8.max()) - 60 / 128) < 0.01 and abs(float(x8.mean())) < 0.01
    y = to_mono_16k(np.stack([tone, -tone * 0], axis=1), 8000)  # stereo: channels averaged
    assert y.shape == (16000,) and abs(float(np.abs(y[2000:14000]).max()) - 0.5) < 0.01
    # the 440 Hz tone stays at 440 Hz after resampling
    spec = np.abs(np.fft.rfft(y))
    assert abs(int(np.argmax(spec)) * 16000 / len(y) - 440) <= 1
    z = to_mono_16k((tone * 32767).astype(np.int16), 8000)
    assert abs(float(np.abs(z).max()) - 1.0) < 0.01


def test_audio_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not found"):
        transcribe(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        transcribe(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    with pytest.raises(AudioError, match="cannot read this WAV"):
        transcribe(tmp_path / "junk.wav")
    if importlib.util.find_spec("soundfile") is None:
        (tmp_path / "text.wav").write_text("hello")
        with pytest.raises(AudioError, match="not a WAV"):
            transcribe(tmp_path / "text.wav")
    wavfile.write(tmp_path / "none.wav", 16000, np.zeros(0, np.int16))
    with pytest.raises(AudioError, match="empty"):
        transcribe(tmp_path / "none.wav")
    with pytest.raises(AudioError, match="too short"):
        transcribe(np.ones(100, np.float32), sample_rate=16000)
    with pytest.raises(AudioError, match="silent"):
        transcribe(np.zeros(16000, np.int16), sample_rate=16000)
    with pytest.raises(AudioError, match="sample_rate"):
        transcribe(np.zeros(16000, np.float32))
    with pytest.raises(AudioError, match="channels-first"):
        to_mono_16k(np.zeros((2, 16000), np.float32), 16000)
    with pytest.raises(AudioError, match="NaN"):
        to_mono_16k(np.full(16000, np.nan, np.float32), 16000)
    with pytest.raises(AudioError, match="engine"):
        transcribe(np.ones(16000, np.float32), sample_rate=16000, engine="siri")  # type: ignore[arg-type]
    with pytest.raises(AudioError, match="never downloads"):
        transcribe(np.ones(16000, np.float32), sample_rate=16000, engine="whisper")


def test_no_recogniser_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio, "available_engines", lambda: [])
    with pytest.raises(AudioError, match=r"seem\[audio\]"):
        transcribe(np.ones(16000, np.float32), sample_rate=16000)


def test_whisper_is_used_only_with_local_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A stand-in ``whisper`` module: auto picks it only once weights are in its cache folder; nothing downloads."""
    loaded: list[str] = []

    class FakeModel:
        def transcribe(self, x: np.ndarray, fp16: bool, language: str | None) -> dict[str, Any]:
            assert x.dtype == np.float32 and not fp16 and language == "en"
            return {"text": "  the white cup "}

    fake = types.ModuleType("whisper")
    fake._MODELS = {"base": "https://example.invalid/x/base.pt", "turbo": "https://example.invalid/x/large-v3-turbo.pt"}  # type: ignore[attr-defined]

    def load_model(path: str) -> FakeModel:
        assert Path(path).is_file(), "load_model must get a local file (a name would download)"
        loaded.append(path)
        return FakeModel()

    fake.load_model = load_model  # type: ignore[attr-defined]
    fake.__spec__ = importlib.machinery.ModuleSpec("whisper", None)
    monkeypatch.setitem(sys.modules, "whisper", fake)
    audio._whisper_model.cache_clear()
    assert audio.find_whisper_weights() is None
    assert "whisper" not in audio.available_engines()
    root = tmp_path / "cache" / "whisper"
    root.mkdir(parents=True)
    (root / "large-v3-turbo.pt").write_bytes(b"weights")
    assert audio.find_whisper_weights() == root / "large-v3-turbo.pt"
    assert audio.available_engines()[0] == "whisper"
    x = np.sin(np.arange(16000) / 10).astype(np.float32)
    assert transcribe(x, sample_rate=16000) == "the white cup"
    assert loaded == [str(root / "large-v3-turbo.pt")]
    monkeypatch.setenv("SEEM_WHISPER_MODEL", "base")
    assert audio.find_whisper_weights() is None  # named but not downloaded: not used
    audio._whisper_model.cache_clear()


# ----------------------------------------------------------------------------------------------------------
# command-line hook


def _segment_like_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--text", default=None)
    p.add_argument("--classes", default=None)
    add_audio_args(p)
    return p


def test_audio_to_text_arg(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    p = _segment_like_parser()
    args = p.parse_args([])
    audio_to_text_arg(args)
    assert args.text is None
    calls: list[tuple[Any, ...]] = []

    def fake(src: Any, sample_rate: Any = None, engine: str = "auto", *, vocabulary: Any = None) -> str:
        calls.append((src, engine, vocabulary))
        return "the cat"

    monkeypatch.setattr(audio, "transcribe", fake)
    argv = ["--audio", "x.wav", "--audio-engine", "pocketsphinx", "--audio-classes", "--classes", "cat,dog"]
    args = p.parse_args(argv)
    audio_to_text_arg(args)
    assert args.text == "the cat" and calls == [("x.wav", "pocketsphinx", ["cat", "dog"])]
    assert "heard: 'the cat'" in capsys.readouterr().err
    with pytest.raises(AudioError, match="not both"):
        audio_to_text_arg(p.parse_args(["--audio", "x.wav", "--text", "a dog"]))
    monkeypatch.setattr(audio, "record", lambda seconds: (_ for _ in ()).throw(AudioError("no microphone")))
    with pytest.raises(AudioError, match="no microphone"):
        audio_to_text_arg(p.parse_args(["--audio", "mic"]))


@needs_speech
def test_segment_command_with_audio(tmp_path: Path) -> None:
    """``seem segment --audio``, once the lead has wired ``add_audio_args`` / ``audio_to_text_arg`` into it."""
    from conftest import SEEM_PARITY_DIR, require

    from seem.cli import build_parser, main

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if "--audio" not in sub.choices["segment"]._option_string_actions:
        pytest.skip("seem segment has no --audio yet (seem.audio.add_audio_args is not wired into seem.cli)")
    d = require(SEEM_PARITY_DIR, "SEEM parity fixtures")
    wav = speak("the person", tmp_path / "p.wav")
    out = tmp_path / "out"
    argv = ["segment", str(d / "images" / "astronaut.png"), "--audio", str(wav), "--audio-classes"]
    argv += ["--classes", "person,cup", "--no-labels", "--model", str(d / "seem_v1_small.pt")]
    argv += ["--config", str(d / "seem_v1_small.yaml"), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    import json

    doc = json.loads((out / "astronaut.json").read_text())
    assert "person" in doc["prompts"]
