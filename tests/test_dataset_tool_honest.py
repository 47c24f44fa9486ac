"""dataset_tool.py changes nothing silently (issue 16, item 5): EXIF orientation applied, alpha
composited on a documented background, no stretching without --transform=stretch, the resolution
chosen from the whole set (and why), junk files skipped with a reason, and a closing summary."""
import os

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import dataset_tool
from training import dataset as ds


def run(*args):
    return CliRunner().invoke(dataset_tool.main, [str(a) for a in args])


def save(folder, name, img, **kwargs):
    os.makedirs(folder, exist_ok=True)
    img.save(os.path.join(folder, name), **kwargs)


def solid(w, h, colour=(200, 40, 40), mode="RGB"):
    return PIL.Image.new(mode, (w, h), colour)


def exif_rotated():
    """Stored 48x32, dark left half / light right half, tagged 'rotate 90 degrees clockwise to view'
    (orientation 6): upright it is 32x48, dark on top."""
    arr = np.full([32, 48, 3], 230, np.uint8)
    arr[:, :24] = 20
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    return PIL.Image.fromarray(arr), dict(exif=exif.tobytes(), quality=95)


def rgba_half_transparent():
    arr = np.zeros([32, 32, 4], np.uint8)
    arr[..., :3] = 0           # black everywhere ...
    arr[:, 16:, 3] = 255       # ... but only the right half is opaque
    return PIL.Image.fromarray(arr, "RGBA")


@pytest.fixture
def photos(tmp_path):
    """A newcomer's folder in miniature: sizes, modes, an EXIF rotation, transparency, junk files."""
    src = str(tmp_path / "photos")
    save(src, "a_large.png", solid(256, 256))                    # sorts first; the others are small
    for k in range(4):
        save(src, "b_{}.png".format(k), solid(64 + 8 * k, 80 + 8 * k))   # portrait, shorter side 64..88
    save(src, "c_gray.png", solid(96, 64, 128, "L"))
    save(src, "d_cmyk.jpg", solid(70, 100, (0, 200, 200, 0), "CMYK"))
    save(src, "e_palette.png", solid(100, 70).convert("P"))
    img, kwargs = exif_rotated()
    save(src, "f_exif.jpg", img, **kwargs)
    save(src, "g_alpha.png", rgba_half_transparent())
    with open(os.path.join(src, ".DS_Store"), "wb") as f:
        f.write(b"\x00\x00\x00\x01Bud1")
    with open(os.path.join(src, "notes.txt"), "w") as f:
        f.write("shot in June")
    return src


def test_non_square_images_are_never_stretched_silently(photos, tmp_path):
    for extra in ([], ["--resolution", 64]):
        result = run("--source", photos, "--dest", tmp_path / "out.zip", *extra)
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert "not square" in result.output and "--transform=center-crop" in result.output, result.output
        assert "--transform=stretch" in result.output
        assert not os.path.exists(tmp_path / "out.zip")
    result = run("--source", photos, "--dest", tmp_path / "stretched", "--resolution", 32, "--transform", "stretch")
    assert result.exit_code == 0, result.output
    assert "stretched: 8 " in result.output   # every image but the two square ones


def test_resolution_from_the_whole_set_and_why(photos, tmp_path):
    lines = []
    summary = dataset_tool.convert_dataset(photos, str(tmp_path / "cc"), transform="center-crop", log=lines.append)
    # Shorter sides 32, 32, 64, 64, 70, 70, 72, 80, 88, 256: lower median 70 -> 64 (not 256 from a_large.png).
    assert summary["resolution"] == 64 and ds.ImageFolderDataset(str(tmp_path / "cc")).resolution == 64
    reason = next(line for line in lines if line.startswith("No --resolution"))
    assert "64x64" in reason and "most images" in reason and "median 70 px" in reason, reason
    assert summary["upscaled"] == 2   # the two 32-px images


def test_exif_alpha_junk_and_summary(photos, tmp_path):
    lines = []
    summary = dataset_tool.convert_dataset(photos, str(tmp_path / "out"), transform="center-crop", resolution=32,
                                           log=lines.append)
    assert summary["num_images"] == 10
    assert summary["skipped"] == {"not an image (by its extension)": ["notes.txt"],
                                  "system file (macOS/Windows folder metadata)": [".DS_Store"]}
    assert summary["rotated"] == 1 and summary["composited"] == 1 and summary["upscaled"] == 0
    text = "\n".join(lines)
    for phrase in ("skipped 1 file(s): system file", ".DS_Store", "notes.txt", "upscaled: 0", "stretched: 0",
                   "rotated by their EXIF orientation: 1", "transparency composited on white: 1"):
        assert phrase in text, (phrase, text)

    data = ds.ImageFolderDataset(str(tmp_path / "out"))
    names = sorted(n for n in os.listdir(photos) if n.endswith((".png", ".jpg")))
    images = {name: data[i][0] for i, name in enumerate(names)}   # written in source order
    upright = images["f_exif.jpg"].astype(int)                     # [3, 32, 32], centre crop of the 32x48 upright
    assert upright[:, :12].mean() < 60 and upright[:, 20:].mean() > 190, "EXIF orientation not applied"
    alpha = images["g_alpha.png"].astype(int)
    assert alpha[:, :, :16].min() == 255 and alpha[:, :, 16:].max() == 0   # transparent half on white

    dataset_tool.convert_dataset(photos, str(tmp_path / "black"), transform="center-crop", resolution=32,
                                 background="black", log=lambda line: None)
    alpha = ds.ImageFolderDataset(str(tmp_path / "black"))[names.index("g_alpha.png")][0]
    assert alpha.max() == 0
    result = run("--source", photos, "--dest", tmp_path / "x", "--transform", "center-crop", "--background", "nope")
    assert result.exit_code != 0 and "--background=nope" in result.output
