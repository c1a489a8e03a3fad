"""Input statistics shared by encoders, transforms and checkpoint loaders (imports nothing from anybind).

* CLIP image normalization (OpenAI CLIP's training-set mean and std per RGB channel), used by the image and video
  towers and by ImageBind's vision preprocessing: https://github.com/openai/CLIP
* Log-mel statistics of ImageBind's audio preprocessing (128-bin kaldi fbank over AudioSet clips): a spectrogram
  is normalized as ``(fbank - AUDIO_MEAN) / AUDIO_STD``. https://arxiv.org/abs/2305.05665
"""

from __future__ import annotations

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

AUDIO_MEAN = -4.268
AUDIO_STD = 9.138

__all__ = ["AUDIO_MEAN", "AUDIO_STD", "CLIP_MEAN", "CLIP_STD"]
