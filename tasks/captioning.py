"""Image captioning: a CNN encoder, a Transformer decoder over its feature map, greedy or beam-search decoding."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.text import BLEUScore

from ..datamodules.images import CaptionSpec
from ..datamodules.images.datamodule import IMAGENET_MEAN, IMAGENET_STD
from ..datamodules.images.text import BOS, EOS, PAD
from ..examples import Examples
from .base import TaskModule

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
            raise ValueError("encoder 'small' has no pretrained weights; use e.g. encoder: resnet18")
        net: nn.Module = SmallCNN()
    else:
        if name not in torchvision.models.list_models(torchvision.models):
            raise ValueError(f"unknown encoder {name!r}: use 'small' or a torchvision model such as resnet18")
        model = torchvision.models.get_model(name, weights="DEFAULT" if pretrained and not weights_path else None)
        if weights_path:
            try:
                model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
            except Exception as error:  # missing, not a checkpoint, or weights of another architecture
                raise ValueError(f"cannot load {name} weights from {weights_path!r}: {error}") from None
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


class ImageCaptioner(TaskModule):
    """Generates a caption for each image; trained with teacher forcing, scored with BLEU-1..4 next to the BLEU-4 of
    always saying the most common training caption (``common_bleu4``).

    Args:
        encoder: ``small`` (fast from scratch) or any torchvision CNN name (``resnet18``, ``mobilenet_v3_small``).
        pretrained: load torchvision's ImageNet weights (needs internet once); ``weights_path``: a local file.
        freeze_encoder: train only the decoder (sensible with pretrained weights).
        beam_size: 1 decodes greedily; more keeps that many candidate captions.
        max_length: the longest caption generated, in words.
        examples_to_log: images whose captions are logged to MLflow each validation epoch.
        spec: the data's ``CaptionSpec`` (vocabulary, image size, common caption) as a checkpoint keeps it; for a
            new training the CLI passes the DataModule's to ``configure`` instead.
    """

    spec_type = CaptionSpec
    prediction_keys = ("caption",)

    def __init__(
        self,
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
        examples_to_log: int = 8,
        spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["spec"])
        self.encoder, channels = build_encoder(encoder, pretrained, weights_path)
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        if channels_last:
            self.encoder.to(memory_format=torch.channels_last)
        self.project = nn.Sequential(nn.Linear(channels, d_model), nn.LayerNorm(d_model))
        self.rows, self.cols = nn.Embedding(64, d_model), nn.Embedding(64, d_model)
        bleu = MetricCollection({f"bleu{n}": BLEUScore(n_gram=n) for n in range(1, 5)})
        self.metrics = nn.ModuleDict({stage: bleu.clone(prefix=f"{stage}/") for stage in ("val", "test")})
        # the same references scored against the most common training caption: what learning has to beat
        self.baseline = nn.ModuleDict({stage: BLEUScore(n_gram=4) for stage in ("val", "test")})
        self.spec: CaptionSpec | None = None
        self.decoder: CaptionDecoder | None = None
        self.restore(spec)

    def build(self, spec: CaptionSpec) -> None:
        """The layers that depend on the data: the decoder over the training captions' words."""
        hp = self.hparams
        self.decoder = CaptionDecoder(
            len(spec.vocab), hp.d_model, hp.num_layers, hp.num_heads, hp.dropout, hp.max_length
        )

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
        vocab = self.spec.vocab
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

    def shared_step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, list[str] | None]:
        """The loss of a batch (teacher forcing), and outside training its generated captions and BLEU."""
        tokens = batch["tokens"][:, : self.hparams.max_length + 2]  # <bos>, max_length words, <eos>
        memory = self.encode(batch["image"])
        logits = self.decoder(memory, tokens[:, :-1])
        loss = F.cross_entropy(
            logits.transpose(1, 2).float(),
            tokens[:, 1:],
            ignore_index=PAD,
            label_smoothing=self.hparams.label_smoothing,
        )
        if stage == "train":
            return loss, None
        captions = self.generate(memory)
        self.log_text_scores(stage, loss, captions, batch["captions"], self.spec.common_caption, "common_bleu4")
        return loss, captions

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, str]]:
        captions = self.generate(self.encode(batch["image"]))
        return [{"file": file, "caption": caption} for file, caption in zip(batch["file"], captions, strict=True)]

    def example_predictions(self, batch: dict[str, Any], captions: list[str]) -> Examples:
        """Images of a batch with their generated and reference captions, as a table and a grid."""
        from matplotlib.figure import Figure

        n = self.hparams.examples_to_log
        mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
        images = batch["image"][:n].float().cpu()
        pixels = ((images * std + mean).clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy()
        rows = [
            {"file": Path(file).name, "generated": generated, "references": " | ".join(refs)}
            for file, generated, refs in zip(batch["file"][:n], captions[:n], batch["captions"][:n], strict=True)
        ]
        figure = Figure(figsize=(2.2 * len(rows), 2.6))
        for i, row in enumerate(rows):
            axis = figure.add_subplot(1, len(rows), i + 1)
            axis.imshow(pixels[i])
            axis.set_title(textwrap.fill(row["generated"], 22), fontsize=7)
            axis.axis("off")
        return Examples(rows, images=list(pixels), figure=figure)

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
