"""Speech transcription: log-mel features -> characters with a CTC acoustic model, scored by WER and CER."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.text import CharErrorRate, WordErrorRate

from ..datamodules.audio import SpeechSpec
from ..datamodules.audio.features import FeaturePipeline
from ..examples import Examples
from .base import TaskModule


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
        encoder: ``lstm`` (default, fast on CPU), ``gru`` or ``conformer`` (torchaudio).
        hidden_size: RNN hidden size per direction, or the Conformer width.
        examples_to_log: reference/hypothesis pairs logged to MLflow each validation epoch.
        spec: the data's ``SpeechSpec`` (characters, feature settings, common word) as a checkpoint keeps
            it; for a new training the CLI passes the DataModule's to ``configure`` instead.
    """

    spec_type = SpeechSpec
    prediction_keys = ("transcript",)

    def __init__(
        self,
        encoder: Literal["lstm", "gru", "conformer"] = "lstm",
        hidden_size: int = 192,
        num_layers: int = 2,
        num_heads: int = 4,
        conv_channels: int = 32,
        dropout: float = 0.1,
        lr: float = 2e-3,
        weight_decay: float = 1e-2,
        examples_to_log: int = 8,
        spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["spec"])
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
        self.subsample = ConvSubsampling(spec.features["n_mels"], hp.conv_channels, dim)
        if hp.encoder == "conformer":
            self.encoder = ConformerEncoder(dim, hp.num_heads, hp.num_layers, hp.dropout)
        else:
            self.encoder = RNNEncoder(hp.encoder, dim, dim, hp.num_layers, hp.dropout)
        self.head = nn.Sequential(nn.Dropout(hp.dropout), nn.Linear(self.encoder.out_dim, len(spec.vocab)))

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch -> (B, T', vocab) log-probabilities and their lengths."""
        if "features" in batch:
            feats, lengths = batch["features"], batch["feature_lengths"]
        else:  # raw audio: featurize on this device
            feats, lengths = self.features(batch["audio"], batch["audio_lengths"], augment=self.training)
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

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = self.trainer.estimated_stepping_batches
        if not isinstance(total, int) or total <= 0 or total > 10_000_000:
            return optimizer
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, self.hparams.lr, total_steps=total, pct_start=0.15)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
