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
        self.hop_length, self.n_masks, self.freq_mask, self.time_mask = hop_length, n_masks, freq_mask, time_mask
        # the STFT's power is taken below: complex abs() and then pow(2) took a quarter of the features' time
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, power=None
        )

    def frames(self, samples: torch.Tensor | int) -> torch.Tensor | int:
        return samples // self.hop_length + 1  # centred STFT

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor, augment: bool = False) -> tuple[torch.Tensor, ...]:
        """(B, S) waveforms + lengths -> (B, T, n_mels) features + frame lengths."""
        # torch.stft computes (B, T, freq) and returns it transposed: taken back, every step below reads and writes
        # contiguous rows and gives (B, T, n_mels) as it is, with no copy to transpose (1.8 ms per 10 s clip, 2.7
        # in the (freq, T) layout)
        spectrum = self.mel.spectrogram(audio.float()).transpose(1, 2)  # complex (B, T, n_fft // 2 + 1)
        power = spectrum.real.square() + spectrum.imag.square()  # |X|^2
        feats = torch.log(power @ self.mel.mel_scale.fb + 1e-6)  # (B, T, n_mels)
        frames = self.frames(lengths)
        mask = (torch.arange(feats.shape[1], device=feats.device)[None] < frames[:, None])[..., None]  # (B, T, 1)
        count = frames[:, None, None].clamp(min=1)
        mean = (feats * mask).sum(1, keepdim=True) / count
        centred = (feats - mean) * mask
        std = centred.square().sum(1, keepdim=True).div(count).sqrt().clamp(min=1e-3)
        feats = centred / std  # speaker/channel normalization; padding stays 0
        if augment and self.n_masks:
            batch, n_steps, n_bands = feats.shape
            widest_time = min(self.time_mask, int(n_steps * 0.2))  # as torchaudio's TimeMasking(p=0.2)
            bands = spans(batch, self.n_masks, n_bands, self.freq_mask, feats.device)
            steps = spans(batch, self.n_masks, n_steps, widest_time, feats.device)
            feats = feats.masked_fill(steps[:, :, None] | bands[:, None, :], 0.0)
        return feats, frames


def spans(batch: int, count: int, size: int, widest: int, device: torch.device) -> torch.Tensor:
    """SpecAugment's masks along one axis, all at once: (batch, size) True inside ``count`` random spans per row.

    The spans are drawn as torchaudio's ``mask_along_axis_iid`` draws them (width uniform in [0, widest), start
    uniform in what is left); one fill of their union replaces its ``2 * count`` passes over the features and takes
    a quarter of their time, which matters in a loader worker that augments every utterance of every epoch.
    """
    width = torch.rand(batch, count, device=device) * widest
    start = torch.rand(batch, count, device=device) * (size - width)
    index = torch.arange(size, device=device)
    inside = (index >= start.long()[..., None]) & (index < (start.long() + width.long())[..., None])
    return inside.any(dim=1)
