"""Imported by the decode workers of the timeout tests: a WAV recorded at 7999 Hz takes a minute to open."""

import time

import soundfile as sf

import anybind.data.readers as readers

SLOW_RATE = 7999
_open_audio = readers.open_audio


def open_audio(path):
    if sf.info(str(path)).samplerate == SLOW_RATE:
        time.sleep(60)
    return _open_audio(path)


readers.open_audio = open_audio  # the audio modality resolves "anybind.data.readers:open_audio" at each read
