"""Speech transcription: log-mel features -> characters with a CTC acoustic model, scored by WER and CER."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.text import CharErrorRate, WordErrorRate

from ..datamodules.audio import SpeechSpec
from ..datamodules.audio.features import FeaturePipeline
from ..datamodules.common import DataError
from ..examples import Examples
from .base import TaskModule
from .pretrained import check_finetuning, frozen_now, param_groups
from .settings import check_model_settings
from .speech_encoders import SPEECH_ENCODERS, SpeechEncoder

PretrainedName = Literal[
    "wav2vec2_base", "wav2vec2_large", "wav2vec2_large_lv60k", "wav2vec2_xlsr_300m", "hubert_base", "hubert_large"
]  # fmt: skip  (tasks/speech_encoders.py)


class ConvSubsampling(nn.Module):
    """Two stride-2 convolutions: 4x fewer frames, so the encoder is cheaper and CTC alignments shorter."""

    def __init__(self, n_mels: int, channels: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.proj = nn.Linear(channels * ((n_mels + 3) // 4), out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x.unsqueeze(1))  # (B, C, T/4, F/4)
        x = self.proj(x.permute(0, 2, 1, 3).flatten(2))
        return x, ((lengths - 1) // 2 + 1 - 1) // 2 + 1  # ceil(ceil(T/2)/2), as the DataModule assumes


class RNNEncoder(nn.Module):
    def __init__(self, kind: str, dim: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn(dim, hidden, layers, batch_first=True, bidirectional=True, dropout=dropout if layers > 1 else 0)
        self.out_dim = 2 * hidden

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


class ConformerEncoder(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        from torchaudio.models import Conformer

        self.conformer = Conformer(dim, heads, 4 * dim, layers, depthwise_conv_kernel_size=15, dropout=dropout)
        self.out_dim = dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.conformer(x, lengths)[0]


class SpeechTranscriber(TaskModule):
    """A CTC speech recognizer: conv subsampling + BiLSTM/GRU (or Conformer) -> characters, greedy decoding; scored
    by WER and CER next to the WER of always writing the most common word of the training transcripts
    (``common_wer``, a little below 1.0).

    Args:
        encoder: ``lstm`` (default, fast on CPU), ``gru`` or ``conformer`` (torchaudio), or a pretrained wav2vec 2.0
            / HuBERT model (``wav2vec2_base``, ``hubert_base``, ...) that reads waveforms (``data.features_on:
            auto`` gives it them).
        pretrained: torchaudio's weights for that model (downloaded once); ``weights_path``: a local state dict.
            Read only for a new model: a checkpoint carries its weights.
        encoder_layers: keep the lower N transformer layers only (faster); null keeps all.
        freeze_feature_encoder: keep the convolutional feature encoder as loaded (the usual recipe).
        freeze_epochs: train only the CTC head for the first K epochs, then fine-tune the encoder.
        encoder_lr_scale, layer_lr_decay: the top transformer layer learns at ``lr * encoder_lr_scale``, each
            lower one at ``layer_lr_decay`` times the one above.
        mask_time_prob, mask_channel_prob: SpecAugment-style masking of the transformer input in training.
        hidden_size: RNN hidden size per direction, or the Conformer width.
        examples_to_log: reference/hypothesis pairs logged to MLflow each validation epoch.
        spec: the data's ``SpeechSpec`` (characters, feature settings, common word) as a checkpoint keeps
            it; for a new training the CLI passes the DataModule's to ``configure`` instead.
    """

    spec_type = SpeechSpec
    prediction_keys = ("transcript",)

    def __init__(
        self,
        encoder: Literal["lstm", "gru", "conformer"] | PretrainedName = "lstm",
        hidden_size: int = 192,
        num_layers: int = 2,
        num_heads: int = 4,
        conv_channels: int = 32,
        dropout: float = 0.1,
        lr: float = 2e-3,
        weight_decay: float = 1e-2,
        examples_to_log: int = 8,
        pretrained: bool = False,
        weights_path: str | None = None,
        encoder_layers: int | None = None,
        freeze_feature_encoder: bool = True,
        freeze_epochs: int = 0,
        encoder_lr_scale: float = 1.0,
        layer_lr_decay: float = 1.0,
        mask_time_prob: float = 0.05,
        mask_channel_prob: float = 0.0,
        spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["spec"])
        check_model_settings(
            sizes={"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
                   "conv_channels": conv_channels},
            rates={"lr": lr}, fractions={"dropout": dropout},
            non_negative={"weight_decay": weight_decay, "examples_to_log": examples_to_log},
        )  # fmt: skip
        if encoder == "conformer" and hidden_size % num_heads:
            raise ValueError(f"model.init_args.hidden_size ({hidden_size}) must be a multiple of "
                             f"model.init_args.num_heads ({num_heads}) for the conformer")  # fmt: skip
        # --- pretrained encoder (tasks/speech_encoders.py): built here, so a bad weights file stops the command
        # before any data is read; weights only for a new model, a checkpoint has them
        check_finetuning(freeze_epochs, encoder_lr_scale)
        if (pretrained or weights_path) and encoder not in SPEECH_ENCODERS:
            raise ValueError(f"encoder {encoder!r} has no pretrained weights: use e.g. encoder: wav2vec2_base")
        self.speech_encoder: SpeechEncoder | None = None
        if encoder in SPEECH_ENCODERS:
            self.speech_encoder = SpeechEncoder(
                encoder, pretrained, weights_path, load=spec is None, num_layers=encoder_layers,
                freeze_feature_encoder=freeze_feature_encoder, mask_time_prob=mask_time_prob,
                mask_channel_prob=mask_channel_prob,
            )  # fmt: skip
            self.speech_encoder.set_frozen(freeze_epochs > 0, training=True)
        # ---
        self.ctc = nn.CTCLoss(blank=0, zero_infinity=True)
        metrics = MetricCollection({"wer": WordErrorRate(), "cer": CharErrorRate()})
        self.metrics = nn.ModuleDict({stage: metrics.clone(prefix=f"{stage}/") for stage in ("val", "test")})
        # the same references scored against the most common training word: what learning has to beat
        self.baseline = nn.ModuleDict({stage: WordErrorRate() for stage in ("val", "test")})
        self.spec: SpeechSpec | None = None
        self.restore(spec)

    def build(self, spec: SpeechSpec) -> None:
        """The layers that depend on the data: features as in training, one output per character."""
        hp = self.hparams
        self.features = FeaturePipeline(**spec.features)
        dim = hp.hidden_size
        if self.speech_encoder is not None:  # waveforms at the data's rate; the encoder resamples them to 16 kHz
            self.speech_encoder.input_rate = spec.features["sample_rate"]
        elif hp.encoder == "conformer":
            self.subsample = ConvSubsampling(spec.features["n_mels"], hp.conv_channels, dim)
            self.encoder = ConformerEncoder(dim, hp.num_heads, hp.num_layers, hp.dropout)
        else:
            self.subsample = ConvSubsampling(spec.features["n_mels"], hp.conv_channels, dim)
            self.encoder = RNNEncoder(hp.encoder, dim, dim, hp.num_layers, hp.dropout)
        out_dim = self.speech_encoder.out_dim if self.speech_encoder is not None else self.encoder.out_dim
        self.head = nn.Sequential(nn.Dropout(hp.dropout), nn.Linear(out_dim, len(spec.vocab)))

    @property
    def reads_waveforms(self) -> bool:
        """A pretrained encoder takes waveforms, not log-mel features: ``data.features_on: auto`` follows it."""
        return self.speech_encoder is not None

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch -> (B, T', vocab) log-probabilities and their lengths."""
        if self.speech_encoder is not None:
            if "audio" not in batch:  # a data setting: the CLI prints it as one ERROR: line
                raise DataError(
                    f"encoder {self.hparams.encoder} reads waveforms: set data.features_on: model (or auto)"
                )
            x, lengths = self.speech_encoder(batch["audio"], batch["audio_lengths"])
            return self.head(x).log_softmax(-1), lengths
        if "features" in batch:
            feats, lengths = batch["features"], batch["feature_lengths"]
        else:  # raw audio: featurize on this device, SpecAugment in training unless the data says not to
            augment = self.training and batch.get("spec_augment", True)
            feats, lengths = self.features(batch["audio"], batch["audio_lengths"], augment=augment)
        x, lengths = self.subsample(feats, lengths)
        return self.head(self.encoder(x, lengths)).log_softmax(-1), lengths

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Greedy CTC: best class per frame, repeats collapsed, blanks removed."""
        vocab = self.spec.vocab
        texts = []
        for best, n in zip(log_probs.argmax(-1).tolist(), lengths.tolist(), strict=True):
            chars = [vocab[c] for i, c in enumerate(best[:n]) if c != 0 and (i == 0 or c != best[i - 1])]
            texts.append(" ".join("".join(chars).split()))
        return texts

    def shared_step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, list[str] | None]:
        """The CTC loss of a batch, and outside training its transcripts and error rates."""
        log_probs, lengths = self(batch)
        loss = self.ctc(log_probs.transpose(0, 1).float(), batch["targets"], lengths, batch["target_lengths"])
        if stage == "train":
            return loss, None
        hypotheses = self.decode(log_probs, lengths)
        self.log_text_scores(stage, loss, hypotheses, batch["text"], self.spec.common_word, "common_wer")
        return loss, hypotheses

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, str]]:
        hyps = self.decode(*self(batch))
        return [{"file": f, "transcript": h} for f, h in zip(batch["file"], hyps, strict=True)]

    def example_predictions(self, batch: dict[str, Any], hypotheses: list[str]) -> Examples:
        """Utterances of a batch with what was said and what the model heard."""
        rows = zip(batch["file"], batch["text"], hypotheses, strict=True)
        n = self.hparams.examples_to_log
        return Examples([{"file": f, "reference": r, "hypothesis": h} for f, r, h in list(rows)[:n]])

    def on_train_epoch_start(self) -> None:
        """A pretrained encoder learns from epoch ``freeze_epochs`` on (the same on resuming: it follows the epoch)."""
        if self.speech_encoder is not None:
            frozen = frozen_now(False, self.hparams.freeze_epochs, self.current_epoch)
            self.speech_encoder.set_frozen(frozen, training=self.training)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params: Any = self.parameters()
        if self.speech_encoder is not None:  # layer-wise learning rates; the frozen feature encoder is left out
            encoder = self.speech_encoder.param_groups(hp.lr * hp.encoder_lr_scale, hp.layer_lr_decay)
            params = param_groups(self, encoder, hp.lr, include=lambda p: p.requires_grad)
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = self.trainer.estimated_stepping_batches
        if not isinstance(total, int) or total <= 0 or total > 10_000_000:
            return optimizer
        peaks = [group["lr"] for group in optimizer.param_groups]  # each group's own peak (layer-wise rates)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, peaks, total_steps=total, pct_start=0.15)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
