"""Image captioning: a CNN encoder, a Transformer decoder over its feature map, greedy or beam-search decoding."""

from __future__ import annotations

import math
import tempfile
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.text import BLEUScore

from ..artifacts import log_artifact, log_figure, log_table
from ..datamodules.common import DataError
from ..datamodules.images import BOS, EOS, IMAGENET_MEAN, IMAGENET_STD, PAD

LENGTH_PENALTY = 0.7  # beam scores are divided by length**0.7 so that short captions are not always preferred


class SmallCNN(nn.Sequential):
    """A light encoder (four stride-2 conv blocks) that trains from scratch in minutes on a CPU."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        super().__init__(*layers)


def build_encoder(name: str, pretrained: bool, weights_path: str | None) -> tuple[nn.Module, int]:
    """A torchvision CNN without its pooling/classifier head (or ``small``), and its output channels."""
    if name == "small":
        if pretrained or weights_path:
            raise DataError("encoder 'small' has no pretrained weights; use e.g. encoder: resnet18")
        net: nn.Module = SmallCNN()
    else:
        if name not in torchvision.models.list_models(torchvision.models):
            raise DataError(f"unknown encoder {name!r}: use 'small' or a torchvision model such as resnet18")
        model = torchvision.models.get_model(name, weights="DEFAULT" if pretrained and not weights_path else None)
        if weights_path:
            try:
                model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
            except Exception as error:  # missing, not a checkpoint, or weights of another architecture
                raise DataError(f"cannot load {name} weights from {weights_path!r}: {error}") from None
        # torchvision classifiers keep their conv trunk in .features (MobileNet, EfficientNet, ConvNeXt, VGG)
        # or as every child before pooling and the classifier (ResNet, RegNet)
        net = model.features if hasattr(model, "features") else nn.Sequential(*list(model.children())[:-2])
    with torch.no_grad():
        channels = net.eval()(torch.zeros(1, 3, 64, 64)).shape[1]
    return net.train(), channels


class CaptionDecoder(nn.Module):
    """Predicts the next word from the words so far while attending over the image's feature map."""

    def __init__(
        self, vocab_size: int, d_model: int, num_layers: int, num_heads: int, dropout: float, max_length: int
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.position = nn.Embedding(max_length + 2, d_model)
        layer = nn.TransformerDecoderLayer(d_model, num_heads, 4 * d_model, dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, num_layers, norm=nn.LayerNorm(d_model))
        self.out = nn.Linear(d_model, vocab_size)

    def forward(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        x = self.embed(tokens) * math.sqrt(self.embed.embedding_dim) + self.position.weight[:length]
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)
        pad = tokens == PAD
        return self.out(self.layers(x, memory, tgt_mask=causal, tgt_key_padding_mask=pad, tgt_is_causal=True))


class ImageCaptioner(LightningModule):
    """Generates a caption for each image; trained with teacher forcing, scored with BLEU-1..4.

    Args:
        vocab: the words the decoder knows; filled from the datamodule when training starts and saved in
            the checkpoint, so ``predict --ckpt_path`` needs nothing else.
        encoder: ``small`` (fast from scratch) or any torchvision CNN name (``resnet18``, ``mobilenet_v3_small``).
        pretrained: load torchvision's ImageNet weights (needs internet once); ``weights_path``: a local file.
        freeze_encoder: train only the decoder (sensible with pretrained weights).
        beam_size: 1 decodes greedily; more keeps that many candidate captions.
        max_length: the longest caption generated, in words.
    """

    task_name: ClassVar[str] = "captioning"

    def __init__(
        self,
        vocab: list[str] | None = None,
        encoder: str = "resnet18",
        pretrained: bool = False,
        weights_path: str | None = None,
        freeze_encoder: bool = False,
        d_model: int = 256,
        num_layers: int = 3,
        num_heads: int = 4,
        dropout: float = 0.1,
        max_length: int = 30,
        beam_size: int = 3,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        num_samples: int = 8,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder, channels = build_encoder(encoder, pretrained, weights_path)
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        if channels_last:
            self.encoder.to(memory_format=torch.channels_last)
        self.project = nn.Sequential(nn.Linear(channels, d_model), nn.LayerNorm(d_model))
        self.rows, self.cols = nn.Embedding(64, d_model), nn.Embedding(64, d_model)
        self.decoder: CaptionDecoder | None = None
        if vocab is not None:
            self._build_decoder(vocab)
        self.val_metrics = MetricCollection({f"bleu{n}": BLEUScore(n_gram=n) for n in range(1, 5)}, prefix="val/")
        self.test_metrics = self.val_metrics.clone(prefix="test/")
        self._samples: dict[str, Any] | None = None

    def _build_decoder(self, vocab: list[str]) -> None:
        hp = self.hparams
        self.decoder = CaptionDecoder(len(vocab), hp.d_model, hp.num_layers, hp.num_heads, hp.dropout, hp.max_length)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if self.hparams.vocab is None:
            vocab = getattr(datamodule, "vocab", None)
            if stage != "fit" or vocab is None:
                raise DataError(
                    "the model has no vocabulary: train it first, or pass a trained checkpoint "
                    "(--ckpt_path best|last|path/to/file.ckpt)"
                )
            self.hparams.vocab = list(vocab)
            self._build_decoder(self.hparams.vocab)
        elif hasattr(datamodule, "use_vocab") and datamodule.vocab != self.hparams.vocab:
            datamodule.use_vocab(self.hparams.vocab)  # encode references with the words this model knows

    def train(self, mode: bool = True) -> ImageCaptioner:
        super().train(mode)
        if self.hparams.freeze_encoder:
            self.encoder.eval()  # frozen batch-norm statistics stay as loaded
        return self

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The image as a sequence of feature-map cells with their row/column position, (batch, cells, d_model)."""
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.encoder(images)
        _, _, height, width = features.shape
        cells = self.project(features.flatten(2).transpose(1, 2))
        rows = torch.arange(height, device=cells.device).clamp(max=63)
        cols = torch.arange(width, device=cells.device).clamp(max=63)
        position = (self.rows(rows)[:, None] + self.cols(cols)[None]).reshape(height * width, -1)
        return cells + position

    def _text(self, ids: list[int]) -> str:
        vocab = self.hparams.vocab
        out = []
        for i in ids:
            if i == EOS:
                break
            if i not in (BOS, PAD):
                out.append(vocab[i])
        return " ".join(out)

    @torch.no_grad()
    def generate(self, memory: torch.Tensor, beam_size: int | None = None) -> list[str]:
        """Captions by beam search (greedy when ``beam_size`` is 1)."""
        k = beam_size or self.hparams.beam_size
        batch, device = memory.shape[0], memory.device
        memory = memory.repeat_interleave(k, dim=0)
        seqs = torch.full((batch * k, 1), BOS, dtype=torch.long, device=device)
        scores = torch.zeros(batch, k, device=device)
        scores[:, 1:] = -math.inf  # all beams start identical: keep one
        done = torch.zeros(batch * k, dtype=torch.bool, device=device)
        for _ in range(self.hparams.max_length + 1):
            logp = F.log_softmax(self.decoder(memory, seqs)[:, -1].float(), dim=-1)
            logp[done] = -math.inf
            logp[done, EOS] = 0.0  # a finished caption only grows by <eos>, at no cost
            vocab_size = logp.shape[-1]
            total = (scores[:, :, None] + logp.view(batch, k, vocab_size)).view(batch, -1)
            scores, index = total.topk(k, dim=1)
            beam = (index // vocab_size + torch.arange(batch, device=device)[:, None] * k).view(-1)
            token = (index % vocab_size).view(-1)
            seqs = torch.cat([seqs[beam], token[:, None]], dim=1)
            done = done[beam] | (token == EOS)
            if done.all():
                break
        lengths = ((seqs != EOS).cumprod(1).sum(1)).view(batch, k).float()  # words before <eos>, with <bos>
        best = (scores / lengths**LENGTH_PENALTY).argmax(1) + torch.arange(batch, device=device) * k
        return [self._text(row) for row in seqs[best].tolist()]

    def _shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        tokens = batch["tokens"][:, : self.hparams.max_length + 2]  # <bos>, max_length words, <eos>
        size = tokens.shape[0]
        memory = self.encode(batch["image"])
        logits = self.decoder(memory, tokens[:, :-1])
        loss = F.cross_entropy(
            logits.transpose(1, 2).float(),
            tokens[:, 1:],
            ignore_index=PAD,
            label_smoothing=self.hparams.label_smoothing,
        )
        if stage != "train":  # train/loss: the CLI's TrainLoss callback logs what training_step returns
            self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
            captions = self.generate(memory)
            metrics = self.val_metrics if stage == "val" else self.test_metrics
            metrics.update(captions, batch["captions"])
            self.log_dict(metrics, on_epoch=True, prog_bar=stage == "val", batch_size=size)
            if stage == "val" and self._samples is None:
                n = self.hparams.num_samples
                self._samples = {
                    "image": batch["image"][:n].float().cpu(),
                    "file": batch["file"][:n],
                    "references": batch["captions"][:n],
                    "generated": captions[:n],
                }
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, str]]:
        captions = self.generate(self.encode(batch["image"]))
        return [{"file": file, "caption": caption} for file, caption in zip(batch["file"], captions, strict=True)]

    def on_validation_epoch_end(self) -> None:
        samples, self._samples = self._samples, None
        if samples is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        self._log_samples(samples, f"samples/epoch_{self.current_epoch:03d}")

    def _log_samples(self, samples: dict[str, Any], folder: str) -> None:
        """A table of images with their reference and generated captions, and a grid PNG, as MLflow artifacts."""
        from matplotlib.figure import Figure
        from PIL import Image

        mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
        pixels = ((samples["image"] * std + mean).clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy()
        rows, images = [], {}
        with tempfile.TemporaryDirectory() as tmp:
            for i, (file, refs, generated) in enumerate(
                zip(samples["file"], samples["references"], samples["generated"], strict=True)
            ):
                thumb = Path(tmp) / f"{i}.png"
                Image.fromarray(pixels[i]).save(thumb)
                log_artifact(self.trainer, thumb, folder)
                images[i] = thumb.name
                rows.append({"file": Path(file).name, "generated": generated, "references": " | ".join(refs)})
        log_table(self.trainer, rows, f"{folder}/captions", images=images)
        figure = Figure(figsize=(2.2 * len(rows), 2.6))
        for i, row in enumerate(rows):
            axis = figure.add_subplot(1, len(rows), i + 1)
            axis.imshow(pixels[i])
            axis.set_title(textwrap.fill(row["generated"], 22), fontsize=7)
            axis.axis("off")
        log_figure(self.trainer, figure, f"{folder}/grid.png")

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = self.trainer.estimated_stepping_batches
        total = int(total) if math.isfinite(total) else 100_000
        warmup = min(self.hparams.warmup_steps, max(total // 10, 1))

        def schedule(step: int) -> float:  # linear warm-up, then cosine decay to 5 %
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
