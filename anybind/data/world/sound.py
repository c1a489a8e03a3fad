"""The sound of a world object: additive synthesis where every attribute changes something audible.

* colour -> pitch: the fundamental is ``COLOR_BASE_HZ[color]`` (200 to 848 Hz, a fourth apart);
* shape -> timbre: a recipe of partials (frequency ratio, amplitude), the fundamental always the strongest;
* size -> envelope: large is loud and long (~0.85 s), small is soft and short (~0.4 s);
* motion -> pitch contour within +-2 semitones, a two-bit code of the direction of each half of the note:
  up rises then rises (-2 -> +2), down falls then falls, left rises then falls (an arch), right falls then
  rises (a V). Horizontal motion has no natural pitch analogue; the arch and the V are simply the two other
  contours. Contours are plain shapes in a spectrogram, where amplitude-modulation rates are hard to tell apart.

Jitter: pitch +-0.2 semitone, level +-10 %, length +-6 %, onset 0-60 ms, partial phases and a faint noise floor.
"""

from __future__ import annotations

import numpy as np

from .attributes import COLOR_BASE_HZ

TIMBRES: dict[str, tuple[tuple[float, float], ...]] = {
    "sphere": ((1, 1.0), (2, 0.06)),                                           # near-pure tone
    "cube": ((1, 1.0), (3, 0.5), (5, 0.3), (7, 0.2)),                          # odd harmonics, hollow/square
    "cone": tuple((k, 0.9 / k) if k > 1 else (1, 1.0) for k in range(1, 9)),   # every harmonic, sawtooth-like
    "cylinder": ((1, 1.0), (2, 0.8), (4, 0.6)),                                # octaves, organ-like
    "torus": ((1, 1.0), (2.76, 0.6), (5.4, 0.4), (8.93, 0.25)),              # inharmonic, bell-like
    "pyramid": ((1, 1.0), (4, 0.7), (5, 0.7)),                                 # bright upper pair
    "prism": ((1, 1.0), (2, 0.9), (3, 0.8)),                                   # dense low harmonics, nasal
    "star": ((1, 1.0), (6, 0.6), (7, 0.5), (8, 0.4)),                          # high sparkle
}
LEVEL = {"small": 0.17, "large": 0.42}  # RMS-normalised timbres: every shape is equally loud
LENGTH_S = {"small": 0.4, "large": 0.85}
# Pitch offset in semitones at the start, middle and end of the note (linear in between).
CONTOURS = {"up": (-2.0, 0.0, 2.0), "down": (2.0, 0.0, -2.0), "left": (-2.0, 2.0, -2.0), "right": (2.0, -2.0, 2.0)}


def synthesize(shape: str, color: str, size: str, motion: str, rng: np.random.Generator, *,
               sample_rate: int = 16000, seconds: float = 1.0) -> np.ndarray:
    """Mono float32 waveform in [-1, 1] of ``seconds`` length."""
    n = int(round(sample_rate * seconds))
    f0 = COLOR_BASE_HZ[color] * 2.0 ** (rng.uniform(-0.2, 0.2) / 12)
    length = min(LENGTH_S[size] * rng.uniform(0.94, 1.06), seconds - 0.07)
    onset = rng.uniform(0.0, min(0.06, seconds - length))
    i0, m = int(onset * sample_rate), int(length * sample_rate)
    u = np.arange(m) / max(m - 1, 1)  # 0 -> 1 over the note

    freq = f0 * 2.0 ** (np.interp(u, (0.0, 0.5, 1.0), CONTOURS[motion]) / 12)
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    note = np.zeros(m)
    recipe = TIMBRES[shape]
    norm = np.sqrt(sum(a * a for _, a in recipe))
    for ratio, amp in recipe:
        audible = (freq * ratio) < 0.45 * sample_rate  # drop partials that would alias
        note += audible * (amp / norm) * np.sin(ratio * phase + rng.uniform(0, 2 * np.pi))

    attack, release = int(0.012 * sample_rate), int((0.05 if size == "small" else 0.12) * sample_rate)
    env = np.ones(m)
    env[:attack] = np.linspace(0, 1, attack)
    env[m - release:] *= np.linspace(1, 0, release) ** 2

    wav = rng.normal(0, rng.uniform(0.002, 0.006), size=n)
    wav[i0:i0 + m] += LEVEL[size] * rng.uniform(0.9, 1.1) * env * note
    return np.clip(wav, -1, 1).astype(np.float32)
