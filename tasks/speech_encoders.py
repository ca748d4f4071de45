"""Self-supervised speech encoders for the transcriber: wav2vec 2.0 and HuBERT (torchaudio's model builders),
fine-tuned with CTC the way their papers do it.

- waveforms at any rate are resampled to the 16 kHz the models were trained on;
- the convolutional feature encoder is frozen by default (it barely changes in fine-tuning and is the most
  expensive part to back-propagate through);
- the transformer's input is masked SpecAugment-style (spans of frames replaced by a learned vector, and feature
  channels zeroed), so that a small data set does not simply get memorized;
- every transformer layer gets its own learning rate: the top one the encoder's, each lower one ``layer_lr_decay``
  times that of the layer above (layer-wise decay, as in BEiT/data2vec fine-tuning).

``pretrained: true`` downloads torchaudio's bundle (once, with internet); ``weights_path`` reads a local state dict
of the same builder (``torch.save(torchaudio.models.wav2vec2_base().state_dict(), path)`` makes one).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from .pretrained import load_strict, read_state_dict

RATE = 16_000  # what every wav2vec 2.0 / HuBERT model was trained on
# builder -> (torchaudio's pretrained bundle, whether its inputs are normalized per utterance)
SPEECH_ENCODERS: dict[str, tuple[str, bool]] = {
    "wav2vec2_base": ("WAV2VEC2_BASE", False),
    "wav2vec2_large": ("WAV2VEC2_LARGE", False),
    "wav2vec2_large_lv60k": ("WAV2VEC2_LARGE_LV60K", True),
    "wav2vec2_xlsr_300m": ("WAV2VEC2_XLSR_300M", True),
    "hubert_base": ("HUBERT_BASE", False),
    "hubert_large": ("HUBERT_LARGE", True),
}


def span_mask(batch: int, length: int, lengths: torch.Tensor, prob: float, span: int) -> torch.Tensor:
    """(batch, length) booleans: spans of ``span`` steps from random starts, ~``prob`` of the valid steps."""
    starts = torch.rand(batch, length, device=lengths.device) < prob / span
    starts &= torch.arange(length, device=lengths.device)[None] < lengths[:, None]
    return F.pad(starts, (span - 1, 0)).unfold(1, span, 1).any(-1)


class SpeechEncoder(nn.Module):
    """Waveforms (any rate) -> (batch, frames at 50 a second, dim) and frame lengths, through a wav2vec 2.0 / HuBERT
    model; ``load`` False builds the architecture only (a checkpoint brings the weights)."""

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        weights_path: str | None = None,
        load: bool = True,
        num_layers: int | None = None,
        freeze_feature_encoder: bool = True,
        mask_time_prob: float = 0.05,
        mask_time_length: int = 10,
        mask_channel_prob: float = 0.0,
        mask_channel_length: int = 64,
    ) -> None:
        super().__init__()
        if name not in SPEECH_ENCODERS:
            raise ValueError(f"unknown speech encoder {name!r}: use one of {', '.join(SPEECH_ENCODERS)}")
        if (
            not (0 <= mask_time_prob < 1 and 0 <= mask_channel_prob < 1)
            or min(mask_time_length, mask_channel_length) < 1
        ):
            raise ValueError("mask_time_prob and mask_channel_prob must be in [0, 1), the mask lengths 1 or more")
        bundle, self.normalize = SPEECH_ENCODERS[name]
        self.model = getattr(torchaudio.models, name)()
        if load and weights_path:
            load_strict(self.model, read_state_dict(weights_path, name), weights_path, name)
        elif load and pretrained:  # downloads torchaudio's weights once (they are cached in ~/.cache/torch/hub)
            downloaded = getattr(torchaudio.pipelines, bundle).get_model()
            self.model.load_state_dict(getattr(downloaded, "model", downloaded).state_dict())
        layers = self.model.encoder.transformer.layers
        if num_layers is not None:  # the lower layers only: faster, and for CTC often as good (fewer to adapt)
            if not 1 <= num_layers <= len(layers):
                raise ValueError(f"encoder_layers must be between 1 and {len(layers)} for {name}, not {num_layers}")
            del layers[num_layers:]
        self.out_dim = self.model.encoder.feature_projection.projection.out_features
        self.mask_embedding = nn.Parameter(torch.empty(self.out_dim).uniform_())  # what a masked frame becomes
        self.mask = (mask_time_prob, mask_time_length, mask_channel_prob, mask_channel_length)
        self.freeze_feature_encoder = freeze_feature_encoder
        self.input_rate = RATE  # the data's rate: the transcriber sets it from its spec
        self.set_frozen(False, training=True)

    def set_frozen(self, frozen: bool, training: bool) -> None:
        """Freeze all of it (the first ``freeze_epochs``) or all but the feature encoder (unless that is trainable)."""
        self.frozen = frozen
        self.requires_grad_(not frozen)
        if self.freeze_feature_encoder:
            self.model.feature_extractor.requires_grad_(False)
        self.train(training)

    def train(self, mode: bool = True) -> SpeechEncoder:
        """Frozen parts stay in eval mode (no dropout or layer drop) whatever mode the model is in."""
        super().train(mode and not getattr(self, "frozen", False))
        if getattr(self, "freeze_feature_encoder", False):
            self.model.feature_extractor.eval()
        return self

    def param_groups(self, lr: float, layer_lr_decay: float) -> list[dict[str, Any]]:
        """One optimizer group per transformer layer, decaying from the top; below them the input projection and
        position embedding, then the feature encoder (when it is trained at all)."""
        layers = list(self.model.encoder.transformer.layers)
        groups = [{"params": list(layer.parameters()), "lr": lr * layer_lr_decay ** (len(layers) - 1 - i)}
                  for i, layer in enumerate(layers)]  # fmt: skip
        in_layers = {id(p) for g in groups for p in g["params"]}
        feature = {id(p) for p in self.model.feature_extractor.parameters()}
        below = [p for p in self.parameters() if id(p) not in in_layers and id(p) not in feature]
        groups.append({"params": below, "lr": lr * layer_lr_decay ** len(layers)})
        if not self.freeze_feature_encoder:
            groups.append({"params": list(self.model.feature_extractor.parameters()),
                           "lr": lr * layer_lr_decay ** (len(layers) + 1)})  # fmt: skip
        return groups

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):  # no graph while frozen
            return self._encode(audio, lengths)

    def _encode(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.input_rate != RATE:
            audio = torchaudio.functional.resample(audio, self.input_rate, RATE)
            lengths = (lengths * RATE + self.input_rate - 1) // self.input_rate
        valid = torch.arange(audio.shape[1], device=audio.device)[None] < lengths[:, None]
        if self.normalize:  # zero mean, unit variance per utterance, as these models were trained
            count = lengths[:, None].clamp(min=1)
            mean = (audio * valid).sum(1, keepdim=True) / count
            std = (((audio - mean) * valid) ** 2).sum(1, keepdim=True).div(count).sqrt().clamp(min=1e-5)
            audio = (audio - mean) / std
        audio = audio * valid
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_feature_encoder):
            features, lengths = self.model.feature_extractor(audio, lengths)
        encoder = self.model.encoder
        x = encoder.feature_projection(features)
        batch, frames, dim = x.shape
        padding = torch.arange(frames, device=x.device)[None] >= lengths[:, None]
        if self.training and not self.frozen:
            time_prob, time_span, channel_prob, channel_span = self.mask
            if time_prob > 0:
                masked = span_mask(batch, frames, lengths, time_prob, min(time_span, frames))
                x = torch.where(masked[..., None], self.mask_embedding.to(x.dtype), x)
            if channel_prob > 0:
                channels = span_mask(batch, dim, torch.full_like(lengths, dim), channel_prob, channel_span)
                x = x.masked_fill(channels[:, None], 0.0)
        x = x.masked_fill(padding[..., None], 0.0)
        attention = (-10000.0 * padding[:, None, None, :].to(x.dtype)).expand(batch, 1, frames, frames)
        return encoder.transformer(x, attention_mask=attention), lengths
