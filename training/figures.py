"""PNG grids of images (samples, reconstructions), written atomically.

Keras-free (NumPy and Pillow): the serving client draws its grids with `grid_picture`."""

import numpy as np
from PIL import Image


def image_grid(images, columns):
    """Tile [N, H, W, C] images in [0, 1] into one uint8 array with a 1-pixel white border."""
    images = np.clip(np.asarray(images, dtype="float32"), 0.0, 1.0)
    n, h, w, c = images.shape
    rows = -(-n // columns)
    grid = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1, c), dtype="float32")
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + col * (w + 1): 1 + col * (w + 1) + w] = image
    grid = (grid * 255).round().astype("uint8")
    return grid[..., 0] if c == 1 else grid


def grid_picture(images, columns=8, scale=None):
    """The grid as a PIL image; small images (8x8 digits) are upscaled so the PNG is viewable."""
    grid = image_grid(images, columns)
    picture = Image.fromarray(grid)
    scale = scale or max(1, 256 // max(grid.shape[:2]))
    if scale > 1:
        picture = picture.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    return picture


def save_grid(images, path, columns=8, scale=None):
    """Save a grid PNG atomically."""
    from zoo import atomic  # here, not at the top: `import zoo` imports Keras

    picture = grid_picture(images, columns, scale)
    with atomic.write_file(path) as tmp:
        picture.save(tmp, format="PNG")


def interleave_rows(originals, reconstructions, columns):
    """Rows of originals followed by rows of their reconstructions, for side-by-side comparison."""
    out = []
    for start in range(0, len(originals), columns):
        out.extend(originals[start: start + columns])
        out.extend(reconstructions[start: start + columns])
    return np.stack(out)
