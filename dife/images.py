"""Reading images of every accepted type into one tensor layout, with limits.

Every image that enters dife goes through [load_image][dife.images.load_image], which returns a
float32 CPU tensor of shape (3, H, W) with values in [0, 1]. Accepted inputs:

* a path (``str`` or ``os.PathLike``) to an image file that Pillow can
  read; the EXIF orientation tag is applied (``PIL.ImageOps.exif_transpose``),
  so keypoints refer to the image as viewers display it;
* a ``PIL.Image.Image`` of any mode, taken as stored (no EXIF rotation:
  the caller already holds the pixels it sees); 16-bit grayscale is divided by
  65535; 32-bit integer (mode ``"I"``) images are read as 8-bit data when all
  values are <= 255, as 16-bit when <= 65535, else as 31-bit;
* a numpy array: (H, W, 3) or (H, W, 4) RGB(A), (H, W, 1) or (H, W) grayscale,
  either ``uint8`` (0..255) or float (values in [0, 1]);
* a torch tensor (3, H, W) or (1, H, W) (no alpha), float in [0, 1] or ``uint8``.

Only regular files are opened: a FIFO, a socket or a device is refused at
once (reading one would block forever). A JPEG that decodes but whose marker
structure is broken (cut short, or bytes written over its data) gives a
[DIFEWarning][dife.errors.DIFEWarning]; one that Pillow cannot decode is an
[ImageError][dife.errors.ImageError].

Transparency is composited **on black** (colour multiplied by alpha), the same
black that fills crop regions outside the image.

[load_images][dife.images.load_images] also accepts batches: a list / tuple of the above, a torch
(B, 3, H, W) tensor, or a numpy (B, H, W, 3) array.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch

from dife.checks import check_regular_file
from dife.errors import DIFEWarning, ImageError, InputError, ShapeError

if TYPE_CHECKING:
    import PIL.Image

__all__ = [
    "MAX_PIXELS",
    "RANGE_TOLERANCE",
    "ImageLike",
    "load_image",
    "load_images",
    "split_images",
    "to_uint8",
    "pil_from_tensor",
]

#: Largest accepted image, in pixels (width x height). Checked from the file
#: header before any pixel is decoded.
MAX_PIXELS: int = 64_000_000

#: Tolerance for float images slightly outside [0, 1] (clamped afterwards).
RANGE_TOLERANCE: float = 1e-3

ImageLike = Union[str, os.PathLike, "PIL.Image.Image", np.ndarray, torch.Tensor]


def _check_size(width: int, height: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"{what} is empty: {width}x{height} pixels")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{what} is too large: {width}x{height} = {width * height} pixels > MAX_PIXELS = {MAX_PIXELS} "
            "(dife.images.MAX_PIXELS); downscale it first"
        )


def _from_float(x: torch.Tensor, what: str) -> torch.Tensor:
    """Validate a float (3, H, W) tensor in [0, 1] and return it as float32 clamped."""
    x = x.detach()
    if torch.isnan(x).any():
        raise ImageError(f"{what} contains NaN values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise ImageError(
            f"{what} has values in [{lo:g}, {hi:g}]; float images must be in [0, 1] (for 0..255 data pass uint8)"
        )
    return x.to("cpu", torch.float32).clamp(0.0, 1.0)  # out of place: never alias the input


def _composite(x: torch.Tensor) -> torch.Tensor:
    """(C, H, W) float in [0, 1] with C in {1, 3, 4} -> (3, H, W); alpha composited on black."""
    if x.shape[0] == 4:
        x = x[:3] * x[3:4]
    elif x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x.contiguous()


def _from_numpy(a: np.ndarray, what: str) -> torch.Tensor:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        hint = ""
        if a.ndim == 3 and a.shape[0] == 3:
            hint = "; numpy images are (H, W, C): use array.transpose(1, 2, 0) for (C, H, W) data"
        raise ShapeError(f"{what}: a numpy image must have shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}{hint}")
    _check_size(a.shape[1], a.shape[0], what)
    # Written straight into a contiguous (C, H, W) float32 tensor: one full-size copy, not two.
    if a.dtype == np.uint8:
        x = torch.empty((a.shape[2], a.shape[0], a.shape[1]), dtype=torch.float32)
        with warnings.catch_warnings():  # a read-only array (e.g. from PIL) is only read here
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            src = torch.from_numpy(np.ascontiguousarray(a))
        x.copy_(src.permute(2, 0, 1)).div_(255.0)
    elif a.dtype.kind == "f":
        x = _from_float(torch.from_numpy(np.array(a.transpose(2, 0, 1), dtype=np.float32, order="C")), what)
    else:
        raise ImageError(f"{what}: numpy images must be uint8 (0..255) or float (0..1), got dtype {a.dtype}")
    return _composite(x)


def _from_torch(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        hint = ""
        if t.ndim == 3 and t.shape[2] == 3:
            hint = "; torch images are (C, H, W): use tensor.permute(2, 0, 1) for (H, W, C) data"
        raise ShapeError(f"{what}: a torch image must have shape (3, H, W) or (1, H, W), got {tuple(t.shape)}{hint}")
    _check_size(t.shape[2], t.shape[1], what)
    if t.dtype == torch.uint8:
        x = t.detach().to("cpu", torch.float32).div_(255.0)
    elif t.is_floating_point():
        x = _from_float(t, what)
    else:
        raise ImageError(f"{what}: torch images must be float (0..1) or uint8 (0..255), got dtype {t.dtype}")
    return _composite(x)


def _from_pil(im: Any, what: str) -> torch.Tensor:
    from PIL import Image

    _check_size(im.width, im.height, what)  # header size: nothing decoded yet
    try:
        im.load()
    except Image.DecompressionBombError as e:
        raise ImageError(f"{what} is too large to decode safely: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{what} could not be decoded (corrupt or truncated image): {e}") from None
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):  # 16-bit grayscale
        a = np.array(im, dtype=np.float32) / 65535.0
        return _composite(torch.from_numpy(np.clip(a, 0.0, 1.0))[None])
    if mode == "I":  # 32-bit signed integers: 8-, 16- or 31-bit data, told apart by the values
        a = np.asarray(im)
        lo, hi = int(a.min()), int(a.max())
        if lo < 0:
            raise ImageError(f"{what} is a 32-bit integer (PIL mode 'I') image with negative values (min {lo})")
        full = 65535 if im.format == "PNG" or 255 < hi <= 65535 else 255 if hi <= 255 else 2**31 - 1
        x = torch.from_numpy(np.array(a, dtype=np.float64) / full).to(torch.float32)
        return _composite(x.clamp_(0.0, 1.0)[None])
    if mode == "F":
        return _composite(_from_float(torch.from_numpy(np.array(im, dtype=np.float32))[None], what))
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in im.info)
    try:
        if has_alpha or (mode in ("L", "1") and "transparency" in im.info):
            im = im.convert("RGBA")
        elif mode != "RGB":
            im = im.convert("RGB")
    except (OSError, ValueError) as e:
        raise ImageError(f"{what} has PIL mode {mode!r}, which cannot be converted to RGB: {e}") from None
    return _from_numpy(np.asarray(im), what)


#: JPEG markers that may start a segment (after the start of image); the rest of 0x02..0xBF are reserved.
_JPEG_SEGMENT_MARKERS = frozenset(range(0xC0, 0xFF)) - {0xD8} - set(range(0xD0, 0xD8)) | {0x01}


def _jpeg_problem(data: bytes) -> str | None:
    """Walk the marker structure of JPEG bytes; say what is wrong, or ``None`` when it looks whole.

    Checks the start and end-of-image markers, every segment length, and that
    the entropy-coded data of each scan holds only stuffed ``0xFF 0x00`` bytes
    and restart markers before the next real marker. A truncated file (no
    end-of-image marker) or random bytes written over the data fail it; Pillow
    decodes many such files without a word when they are not cut short.
    Trailing bytes after the end-of-image marker are allowed.

    Args:
        data: The whole file.

    Returns:
        A short description of the first problem (with its byte offset), or ``None``.
    """
    n = len(data)
    if data[:2] != b"\xff\xd8":
        return "no JPEG start-of-image marker"
    truncated = "the file ends before its end-of-image marker (truncated)"
    i = 2
    while True:
        if i >= n:
            return truncated
        if data[i] != 0xFF:
            return f"byte 0x{data[i]:02X} at offset {i} where a marker should start"
        while i < n and data[i] == 0xFF:  # fill bytes may precede a marker
            i += 1
        if i >= n:
            return truncated
        marker = data[i]
        i += 1
        if marker == 0xD9:
            return None
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # stand-alone markers
            continue
        if marker not in _JPEG_SEGMENT_MARKERS:
            return f"invalid marker 0xFF{marker:02X} at offset {i - 2}"
        if i + 2 > n:
            return truncated
        length = int.from_bytes(data[i : i + 2], "big")
        if length < 2:
            return f"segment 0xFF{marker:02X} at offset {i - 2} has a bad length {length}"
        if i + length > n:
            return truncated
        i += length
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            while True:
                j = data.find(b"\xff", i)
                if j < 0:
                    return truncated
                k = j + 1
                while k < n and data[k] == 0xFF:
                    k += 1
                if k >= n:
                    return truncated
                if data[k] == 0x00 or 0xD0 <= data[k] <= 0xD7:  # stuffed 0xFF or a restart marker
                    i = k + 1
                    continue
                i = j
                break


def _warn_if_corrupt_jpeg(path: Path, what: str) -> None:
    """Warn (``DIFEWarning``) when a JPEG that Pillow decoded has a broken structure (see `_jpeg_problem`)."""
    try:
        problem = _jpeg_problem(path.read_bytes())
    except OSError:  # pragma: no cover - it was just read by Pillow
        return
    if problem is not None:
        warnings.warn(
            f"{what} decoded, but it looks corrupt or truncated ({problem}); parts of it may be grey or garbage",
            DIFEWarning,
            stacklevel=4,
        )


def _from_path(path: Path, what: str) -> torch.Tensor:
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.exists():
        raise ImageError(f"image file not found: '{path}'")
    if path.is_dir():
        raise ImageError(f"'{path}' is a directory, not an image file")
    check_regular_file(path, "image", error=ImageError)  # a FIFO or a device would block Pillow forever
    what = f"image '{path}'"
    with warnings.catch_warnings():
        # dife applies its own MAX_PIXELS limit below, before decoding.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                _check_size(im.width, im.height, what)
                try:
                    im.load()
                    if im.format == "JPEG":
                        _warn_if_corrupt_jpeg(path, what)
                    if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation; exif_transpose would copy anyway
                        im = ImageOps.exif_transpose(im)
                except Image.DecompressionBombError as e:
                    raise ImageError(f"{what} is too large to decode safely: {e}") from None
                except (OSError, ValueError, SyntaxError) as e:
                    raise ImageError(f"{what} could not be decoded (corrupt or truncated image): {e}") from None
                return _from_pil(im, what)
        except Image.DecompressionBombError as e:
            raise ImageError(f"{what} is too large to decode safely: {e}") from None
        except UnidentifiedImageError:
            raise ImageError(f"{what} is not an image file Pillow can read (corrupt or unsupported format)") from None
        except OSError as e:
            raise ImageError(f"{what} cannot be read: {e}") from None


def load_image(image: ImageLike, *, what: str = "image") -> torch.Tensor:
    """Read one image of any accepted type.

    Args:
        image: A path, PIL image, numpy array ((H, W), (H, W, 1|3|4); uint8
            or float in [0, 1]) or torch tensor ((3, H, W) float in [0, 1] or
            uint8). See the module docstring for details.
        what: Name of the argument, used in error messages.

    Returns:
        (3, H, W) float32 CPU tensor with values in [0, 1]. Alpha is
        composited on black; grayscale is repeated over the 3 channels.

    Raises:
        ImageError: missing / unreadable / corrupt file, a path that is not a
            regular file (FIFO, device), empty image, image larger than
            `dife.images.MAX_PIXELS`, unsupported dtype, NaN values,
            float values outside [0, 1] (beyond a 1e-3 tolerance) or a negative
            32-bit integer image.
        ShapeError: an array or tensor of the wrong shape (named in the message).
        InputError: an object of an unsupported type.
    """
    if isinstance(image, (str, os.PathLike)):
        return _from_path(Path(image), what)
    if isinstance(image, torch.Tensor):
        return _from_torch(image, what)
    if isinstance(image, np.ndarray):
        return _from_numpy(image, what)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        return _from_pil(image, what)
    raise InputError(f"{what} must be a file path, PIL image, numpy array or torch tensor, got {type(image).__name__}")


def split_images(images: Any) -> tuple[list[Any], bool]:
    """Split an image or a batch into per-image sources without decoding them.

    This is the cheap first half of [load_images][dife.images.load_images]; it lets callers load
    (and free) big images chunk by chunk.

    Args:
        images: One image (any type [load_image][dife.images.load_image] accepts), a list /
            tuple of them, a torch (B, 3, H, W) tensor or a numpy
            (B, H, W, C) array.

    Returns:
        ``(sources, batched)``: one entry per image (batch tensors and arrays
        are split into views) and whether the input was a batch.

    Raises:
        InputError: for an empty list or batch.
        ShapeError: for tensors / arrays of an unsupported number of dimensions.
    """
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise InputError("got an empty list of images")
        return list(images), True
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        if images.shape[0] == 0:
            raise InputError(f"got an empty batch of images: shape {tuple(images.shape)}")
        if images.shape[1] not in (1, 3):
            hint = "; use tensor.permute(0, 3, 1, 2) for (B, H, W, C) data" if images.shape[3] == 3 else ""
            raise ShapeError(f"a torch batch of images must be (B, 3, H, W), got {tuple(images.shape)}{hint}")
        return list(images.unbind(0)), True
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.shape[0] == 0:
            raise InputError(f"got an empty batch of images: shape {images.shape}")
        if images.shape[3] not in (1, 3, 4):
            hint = "; use array.transpose(0, 2, 3, 1) for (B, C, H, W) data" if images.shape[1] == 3 else ""
            raise ShapeError(f"a numpy batch of images must be (B, H, W, 3), got {images.shape}{hint}")
        return list(images), True
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim not in (2, 3):
        kind = (
            "torch (3, H, W) or (B, 3, H, W)" if isinstance(images, torch.Tensor) else "numpy (H, W, 3) or (B, H, W, 3)"
        )
        raise ShapeError(f"images must be {kind}, got shape {tuple(images.shape)}")
    return [images], False


def load_images(images: Any) -> tuple[list[torch.Tensor], bool]:
    """Read one image or a batch of images.

    Args:
        images: One image of any type [load_image][dife.images.load_image] accepts, a list /
            tuple of them (types may be mixed, sizes may differ), a torch
            (B, 3, H, W) float tensor or a numpy (B, H, W, 3) uint8 array.

    Returns:
        ``(tensors, batched)``: a list of (3, H, W) float32 tensors in [0, 1]
        and whether the input was a batch (``False`` for a single image, so
        callers can return unbatched results).

    Raises:
        ImageError, ShapeError, InputError: as [load_image][dife.images.load_image]; for a batch
            the message names the index (``images[3]``).
    """
    sources, batched = split_images(images)
    if not batched:
        return [load_image(sources[0])], False
    return [load_image(s, what=f"images[{i}]") for i, s in enumerate(sources)], True


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float tensor in [0, 1] -> (H, W, 3) uint8 numpy array (rounded)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ShapeError(f"to_uint8 expects a (3, H, W) tensor, got {shape}")
    x = image.detach().to("cpu", torch.float32).clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)
    return x.permute(1, 2, 0).contiguous().numpy()


def pil_from_tensor(image: torch.Tensor) -> PIL.Image.Image:
    """(3, H, W) float tensor in [0, 1] -> RGB ``PIL.Image.Image``."""
    from PIL import Image

    return Image.fromarray(to_uint8(image))
