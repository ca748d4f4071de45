"""Log-mel features with per-utterance normalization and SpecAugment, shared by the data and the model."""

from __future__ import annotations

import torch
import torchaudio
from torch import nn


class FeaturePipeline(nn.Module):
    """Log-mel features with per-utterance normalization and SpecAugment; runs in the DataModule or on the GPU."""

    def __init__(
        self, sample_rate: int = 16000, n_mels: int = 80, n_fft: int = 400, hop_length: int = 160,
        freq_mask: int | None = None, time_mask: int = 10, n_masks: int = 2,
    ) -> None:  # fmt: skip
        super().__init__()
        freq_mask = n_mels // 8 if freq_mask is None else freq_mask  # up to 1/8 of the bands per mask
        self.settings = {"sample_rate": sample_rate, "n_mels": n_mels, "n_fft": n_fft, "hop_length": hop_length,
                         "freq_mask": freq_mask, "time_mask": time_mask, "n_masks": n_masks}  # fmt: skip
        self.hop_length, self.n_masks = hop_length, n_masks
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
        self.freq_masking = torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True)
        self.time_masking = torchaudio.transforms.TimeMasking(time_mask, iid_masks=True, p=0.2)

    def frames(self, samples: torch.Tensor | int) -> torch.Tensor | int:
        return samples // self.hop_length + 1  # centred STFT

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor, augment: bool = False) -> tuple[torch.Tensor, ...]:
        """(B, S) waveforms + lengths -> (B, T, n_mels) features + frame lengths."""
        feats = torch.log(self.mel(audio.float()) + 1e-6)  # (B, n_mels, T)
        frames = self.frames(lengths)
        mask = (torch.arange(feats.shape[-1], device=feats.device)[None] < frames[:, None])[:, None]  # (B, 1, T)
        count = frames[:, None, None].clamp(min=1)
        mean = (feats * mask).sum(-1, keepdim=True) / count
        std = (((feats - mean) * mask) ** 2).sum(-1, keepdim=True).div(count).sqrt().clamp(min=1e-3)
        feats = ((feats - mean) / std) * mask  # speaker/channel normalization; padding stays 0
        if augment:
            for _ in range(self.n_masks):
                feats = self.time_masking(self.freq_masking(feats.unsqueeze(1))).squeeze(1)
        return feats.transpose(1, 2), frames
