"""Images as cameras and tools save them: upright whatever their EXIF orientation, every mode and bit depth, the
first frame of an animated image; everywhere an image is read (fit, test, predict, the up-front check).

Each picture is made upright first and stored turned the way a phone stores it, so the assertions compare the
decoded pixels with the picture itself, not with another reader's opinion of it.
"""

from __future__ import annotations

import importlib
import struct
import zlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

# How each EXIF orientation stores an upright picture: the stored pixels are the picture turned this way.
STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # the camera was turned a quarter clockwise: the picture is stored a quarter back
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.fixture(scope="module")
def decode(package):
    return importlib.import_module(f"{package.__name__}.datamodules.images.decode")


@pytest.fixture(scope="module")
def images(package):
    return importlib.import_module(f"{package.__name__}.datamodules.images")


def picture(width: int = 12, height: int = 8, seed: int = 0) -> Image.Image:
    """An upright RGB picture of 4x4 blocks of random colours (JPEG keeps them): any turn or flip is another array."""
    blocks = np.random.default_rng(seed).integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return Image.fromarray(blocks.repeat(4, axis=0).repeat(4, axis=1))


def stored(upright: Image.Image, orientation: int) -> Image.Image:
    return upright if STORED[orientation] is None else upright.transpose(STORED[orientation])


def save_as_camera(upright: Image.Image, path: Path, orientation: int, **options) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored(upright, orientation).save(path, exif=exif, **options)
    return path


def as_array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(
    "suffix, options, tolerance",
    [
        (".jpg", {"quality": 100, "subsampling": 0}, 8),
        (".png", {}, 0),
        (".tif", {}, 0),
        (".webp", {"lossless": True}, 0),
    ],
)
def test_every_exif_orientation_is_decoded_upright(decode, tmp_path, orientation, suffix, options, tolerance):
    upright = picture()
    path = save_as_camera(upright, tmp_path / f"photo{suffix}", orientation, **options)
    got = as_array(decode.decode(path))
    assert got.shape == (8, 12, 3), f"orientation {orientation}: decoded {got.shape[1]}x{got.shape[0]}, not 12x8"
    assert np.abs(got.astype(int) - np.asarray(upright)).max() <= tolerance
    assert decode.check_image(path) is None


def test_fit_test_and_predict_see_phone_photos_upright(images, tmp_path):
    """Eight copies of one square picture, each stored with another orientation: every split and predict read all
    eight as the same upright picture."""
    upright = picture(16, 16, seed=3)
    (tmp_path / "images").mkdir()
    rows = ["image,caption"]
    for orientation in range(1, 9):
        name = f"o{orientation}.png"
        save_as_camera(upright, tmp_path / "images" / name, orientation)
        rows += [f"{name},a photo number {orientation}", f"{name},the same photo again"]
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    dm = images.ImageCaptionDataModule(
        str(tmp_path / "captions.csv"), image_size=16, augment=False, val_fraction=0.25, test_fraction=0.25,
        predict_path=str(tmp_path / "images"), batch_size=8,
    )  # fmt: skip
    dm.setup("fit")
    dm.setup("test")
    dm.setup("predict")
    expected = dm._transform(train=False)(torch.from_numpy(np.array(upright)).permute(2, 0, 1))
    seen = 0
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader(), dm.predict_dataloader()):
        for batch in loader:
            for file, image in zip(batch["file"], batch["image"], strict=True):
                assert torch.allclose(image, expected, atol=1e-6), f"{Path(file).name} is not read upright"
                seen += 1
    assert seen == 16  # each image once in its split, and once more to predict


def test_an_animated_image_is_its_first_frame_and_its_frame_count_costs_nothing(decode, tmp_path):
    """400 frames of 100x100 are 4 MP decoded at once; the limit is on one frame, and only that one is decoded."""
    frames = [Image.new("RGB", (100, 100), (i % 256, i * 7 % 256, 3)) for i in range(400)]
    frames[0].paste((200, 10, 90), (10, 10, 40, 30))
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=20)
    assert Image.open(path).n_frames == 400
    got = as_array(decode.decode(path, max_pixels=20_000))
    np.testing.assert_array_equal(got, np.asarray(frames[0].convert("RGB")))
    assert decode.check_image(path, max_pixels=20_000) is None
    assert "is 100x100 pixels" in decode.check_image(path, max_pixels=9_999)
    with pytest.raises(ValueError, match="more than data.max_image_pixels = 9,999"):
        decode.decode(path, max_pixels=9_999)


def test_sixteen_bit_tiff_is_scaled_not_clipped(decode, tmp_path):
    grey = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(grey).save(tmp_path / "scan.tif")
    got = as_array(decode.decode(tmp_path / "scan.tif"))
    np.testing.assert_array_equal(
        got[..., 0], (grey / 257).round().astype(np.uint8)
    )  # PIL alone gives 255 almost everywhere


def png16(pixels: np.ndarray, exif: bytes | None = None) -> bytes:
    """A 16-bit RGB PNG (PIL cannot write one), with an optional eXIf chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = pixels.shape
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    extra = chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")) if exif else b""
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


# ---- the reader over orientation, mode, bit depth and frame count ----------------------------------------------------
MODES = {  # lossless formats and the modes each stores as they are; whether it keeps EXIF; whether it animates
    ".png": (["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "RGB;16"], True, True),
    ".tif": (["1", "L", "P", "RGB", "RGBA", "I;16"], True, True),
    ".webp": (["RGB", "RGBA"], True, True),
    ".gif": (["L", "P"], False, True),
    ".bmp": (["1", "L", "P", "RGB"], False, False),
}
BUDGET = settings(
    max_examples=120, deadline=timedelta(seconds=5), derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip


@st.composite
def camera_images(draw):
    suffix = draw(st.sampled_from(sorted(MODES)))
    modes, has_exif, animates = MODES[suffix]
    return (
        suffix,
        draw(st.sampled_from(modes)),
        draw(st.integers(1, 8)) if has_exif else 1,
        draw(st.integers(1, 3)) if animates else 1,
        draw(st.integers(1, 9)),
        draw(st.integers(1, 9)),
        draw(st.integers(0, 2**16)),
    )


def upright_frame(mode: str, width: int, height: int, seed: int) -> tuple[Image.Image | np.ndarray, np.ndarray]:
    """A frame in ``mode`` and the RGB uint8 picture it is (16 bits scaled by 257, alpha dropped)."""
    rng = np.random.default_rng(seed)
    if mode == "RGB;16":
        pixels = rng.integers(0, 65536, (height, width, 3), dtype=np.uint16)
        return pixels, (pixels / 257).round().astype(np.uint8)
    if mode == "I;16":
        grey = rng.integers(0, 65536, (height, width), dtype=np.uint16)
        return Image.fromarray(grey), np.repeat((grey / 257).round().astype(np.uint8)[..., None], 3, axis=2)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    rgba[..., 3] = np.maximum(rgba[..., 3], 1)  # a fully transparent pixel's colour is not kept by every encoder
    frame = Image.fromarray(rgba).convert(mode) if mode != "P" else Image.fromarray(rgba[..., :3]).quantize(16)
    return frame, np.asarray(frame.convert("RGB"))


@BUDGET
@given(case=camera_images())
def test_the_reader_gives_the_picture_for_every_orientation_mode_depth_and_frame_count(decode, tmp_path, case):
    suffix, mode, orientation, frames, width, height, seed = case
    made = [upright_frame(mode, width, height, seed + i) for i in range(frames)]
    path = tmp_path / f"image{suffix}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    if mode == "RGB;16":
        path.write_bytes(png16(_turned(made[0][0], orientation), exif.tobytes() if orientation > 1 else None))
    else:
        first, *rest = [stored(frame, orientation) for frame, _ in made]
        options = {"exif": exif} if MODES[suffix][1] else {}
        if frames > 1:
            options.update(save_all=True, append_images=rest, duration=50)
        if suffix == ".webp":
            options.update(lossless=True, exact=True)
        first.save(path, **options)
    expected = made[0][1]
    got = decode.decode(path)
    assert got.dtype == torch.uint8 and got.shape == (3, height, width), (got.shape, (height, width))
    np.testing.assert_array_equal(as_array(got), expected)
    assert decode.check_image(path) is None
    assert decode.read_image(path, 5).shape == (3, 5, 5)


def _turned(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """A (H, W, C) array stored the way ``STORED`` turns a picture, for the 16-bit PNG PIL cannot make."""
    turns = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, 1),
        7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
        8: lambda a: np.rot90(a, -1),
    }
    return np.ascontiguousarray(turns[orientation](pixels))
