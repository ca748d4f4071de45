"""Image captioning: a CNN encoder, a Transformer decoder over its feature map, greedy or beam-search decoding."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.text import BLEUScore

from ..datamodules.images import CaptionSpec
from ..datamodules.images.pixels import IMAGENET_MEAN, IMAGENET_STD
from ..datamodules.images.text import BOS, EOS, PAD
from ..examples import Examples
from .base import TaskModule
from .image_encoders import FeatureCache, build_image_encoder
from .pretrained import check_finetuning, frozen_now, param_groups, set_trainable
from .settings import check_model_settings

LENGTH_PENALTY = 0.7  # beam scores are divided by length**0.7 so that short captions are not always preferred


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
        encoder: ``small`` (fast from scratch), ``efficientnet_lite0`` (ImageNet weights shipped in the
            ``pretrained`` extra: offline) or a torchvision model (``resnet18``, ``convnext_tiny``, ``vit_b_16``).
        pretrained: ImageNet weights (torchvision's are downloaded once); ``weights_path``: a local state dict.
            Read only for a new model: a checkpoint carries its weights.
        encoder_image_size: the side images are resized to before the encoder; null: what its weights were
            trained on (224) when pretrained, the data's size otherwise.
        freeze_encoder: train only the decoder; ``freeze_epochs``: only for the first K epochs, then fine-tune.
        encoder_lr_scale: the encoder's learning rate as a fraction of ``lr`` (e.g. 0.1 to fine-tune gently).
        cache_features: while the encoder is frozen, compute each image's features once and reuse them.
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
        freeze_epochs: int = 0,
        encoder_lr_scale: float = 1.0,
        cache_features: bool = False,
        encoder_image_size: int | None = None,
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
        check_model_settings(
            sizes={"d_model": d_model, "num_layers": num_layers, "num_heads": num_heads, "max_length": max_length,
                   "beam_size": beam_size},
            rates={"lr": lr}, fractions={"dropout": dropout, "label_smoothing": label_smoothing},
            non_negative={"weight_decay": weight_decay, "warmup_steps": warmup_steps,
                          "examples_to_log": examples_to_log},
        )  # fmt: skip
        if d_model % num_heads:
            raise ValueError(f"model.init_args.d_model ({d_model}) must be a multiple of model.init_args.num_heads "
                             f"({num_heads}): each head takes an equal share")  # fmt: skip
        # --- pretrained encoder (tasks/image_encoders.py); weights only for a new model, a checkpoint has them
        check_finetuning(freeze_epochs, encoder_lr_scale)
        self.encoder, channels = build_image_encoder(
            encoder, pretrained, weights_path, encoder_image_size, load=spec is None
        )
        self.encoder_frozen = freeze_encoder or freeze_epochs > 0
        set_trainable(self.encoder, not self.encoder_frozen, training=True)
        self.feature_cache = FeatureCache() if cache_features else None
        # ---
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
        if self.encoder_frozen:
            self.encoder.eval()  # frozen batch-norm statistics stay as loaded
        return self

    def on_train_epoch_start(self) -> None:
        """Unfreeze the encoder after ``freeze_epochs`` (the same on resuming: it follows the epoch)."""
        self.encoder_frozen = frozen_now(self.hparams.freeze_encoder, self.hparams.freeze_epochs, self.current_epoch)
        set_trainable(self.encoder, not self.encoder_frozen, training=self.training)
        if not self.encoder_frozen:
            self.feature_cache = None  # the encoder learns now: features change every step

    def encode(self, images: torch.Tensor, files: list[str] | None = None) -> torch.Tensor:
        """The image as a sequence of feature-map cells with their row/column position, (batch, cells, d_model)."""
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.feature_cache is not None and files is not None and self.encoder_frozen:
            features = self.feature_cache(self.encoder, images, files)
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):  # no graph if frozen
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
        memory = self.encode(batch["image"], batch.get("file"))
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
        hp = self.hparams  # the encoder at lr * encoder_lr_scale; left out only when it is frozen for good
        encoder = [{"params": list(self.encoder.parameters()), "lr": hp.lr * hp.encoder_lr_scale}]
        encoder = [] if hp.freeze_encoder else encoder
        params = param_groups(self, encoder, hp.lr, include=lambda p: p.requires_grad)
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
