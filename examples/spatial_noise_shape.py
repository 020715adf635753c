"""Element-wise vs channel-wise dropout masks in a small CNN on 8x8 digits.

Neighbouring pixels of a feature map are strongly correlated, so dropping
single activations removes little information: the next convolution can
read a dropped value off its neighbours. Dropping whole channels instead
(SpatialDropout, Tompson et al. 2015) is `noise_shape=(None, 1, 1, C)`: the
mask has one entry per example and channel and is broadcast over height and
width. Both are the same `kdv.Dropout` layer:

    kdv.Dropout(rate)                               # one draw per activation
    kdv.Dropout(rate, noise_shape=(None, 1, 1, C))  # one draw per channel

The script trains the same CNN (two 3x3 convolutions) on scikit-learn's
bundled digits, reshaped to 8x8x1 images, three times: without dropout,
with element-wise and with channel-wise dropout after each convolution
(same seeds and data order). It prints the accuracy table (train accuracy
measured with `evaluate`, dropout off) and draws the masks the first
training example got at the first step beside the validation curves.

Run under any backend:

    KERAS_BACKEND=jax python examples/spatial_noise_shape.py
    KERAS_BACKEND=tensorflow python examples/spatial_noise_shape.py --quick
"""

import statistics

import numpy as np

from _common import (
    EpochLog, ExampleParser, check, digits_split, fit, grid_image, import_keras,
    plot_val_accuracy, pyplot, save_figure,
)

FILTERS = (32, 64)
MODELS = ("none", "element-wise", "channel-wise")

parser = ExampleParser(
    __doc__, "spatial_noise_shape", epochs=40, train_size=500, batch_size=32, quick={"epochs": 2}
)
parser.add_argument("--rate", type=float, default=0.25)
# Parsed before the slow imports: --help and usage errors answer at once.
args = parser.parse_args()
keras = import_keras()

import keras_dropout_variants as kdv  # noqa: E402


def noise_shape(kind, channels):
    return (None, 1, 1, channels) if kind == "channel-wise" else None


def build_model(kind, rate, seed):
    keras.utils.set_random_seed(seed)  # the same initial weights for each kind
    layers = [keras.Input((8, 8, 1))]
    for i, channels in enumerate(FILTERS):
        layers.append(keras.layers.Conv2D(channels, 3, padding="same", activation="relu"))
        if kind != "none":
            layers.append(kdv.Dropout(rate, noise_shape=noise_shape(kind, channels), seed=seed + 1 + i))
    layers += [
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ]
    model = keras.Sequential(layers, name=kind.replace("-", "_"))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def first_step_masks(kind, rate, seed, batch_size):
    """The first conv's dropout mask for the first training batch, as 0/1.

    A fresh layer with the model's arguments, run once in training mode on
    ones: its counter is at 0, as the model's is at its first step, so this
    is the mask that step multiplies the feature maps by (up to the scale).
    """
    layer = kdv.Dropout(rate, noise_shape=noise_shape(kind, FILTERS[0]), seed=seed + 1)
    ones = np.ones((batch_size, 8, 8, FILTERS[0]), dtype="float32")
    return keras.ops.convert_to_numpy(layer(ones, training=True)) != 0


class Progress(EpochLog, keras.callbacks.Callback):
    """fit() progress lines and epoch times (`EpochLog`'s defaults)."""


def tile(maps, columns=8):
    """(h, w, channels) maps side by side in a grid of `columns`, separated by
    gray lines (gray where the last row has no channel left)."""
    h, w, channels = maps.shape
    rows = -(-channels // columns)
    blocks = np.full((rows * columns, h, w), 0.5)
    blocks[:channels] = maps.transpose(2, 0, 1)
    return grid_image(blocks.reshape(rows, columns, h, w))


def plot(masks, histories, rate, out):
    fig = pyplot().figure(figsize=(12, 5.5))
    grid = fig.add_gridspec(2, 2, width_ratios=(1.1, 1), wspace=0.15, hspace=0.3)
    for row, kind in enumerate(("element-wise", "channel-wise")):
        ax = fig.add_subplot(grid[row, 0])
        ax.imshow(tile(masks[kind][0]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            f"{kind}: {FILTERS[0]} 8x8 channels of the first conv (white = kept)", fontsize=10
        )
    plot_val_accuracy(fig.add_subplot(grid[:, 1]), histories, "dropout masks")
    fig.suptitle(
        f"Masks of the first training step for example 0 (rate {rate}), and "
        f"training curves ({keras.backend.backend()} backend)"
    )
    save_figure(fig, out, bbox_inches="tight")


def main():
    x_train, x_val, y_train, y_val = digits_split(args.train_size, args.seed, shape=(8, 8, 1))
    print(
        f"backend: {keras.backend.backend()}; {len(x_train)} training and "
        f"{len(x_val)} validation images of 8x8x1"
    )

    masks = {k: first_step_masks(k, args.rate, args.seed, args.batch_size) for k in MODELS[1:]}
    channel = masks["channel-wise"]
    print(
        f"first-step keep fraction: element-wise {masks['element-wise'].mean():.3f}, "
        f"channel-wise {channel.mean():.3f}"
    )

    histories, rows = {}, []
    for kind in MODELS:
        print(f"\n== {kind} ==", flush=True)
        model = build_model(kind, args.rate, args.seed)
        progress = Progress(f"[{kind}]", log_every=max(1, args.epochs // 8))
        history = fit(
            model, (x_train, y_train), (x_val, y_val), args, callbacks=[progress], verbose=0
        )
        histories[kind] = history.history
        train_acc = model.evaluate(x_train, y_train, batch_size=1024, verbose=0)[1]
        val_acc = history.history["val_accuracy"][-1]
        val_loss = history.history["val_loss"][-1]
        # The first epoch includes tracing/compilation.
        seconds = statistics.median(progress.seconds[1:] or progress.seconds)
        rows.append((kind, train_acc, val_acc, val_loss, seconds))

    print(
        f"\nbackend {keras.backend.backend()}, {args.epochs} epochs, rate {args.rate}\n"
        "train acc: evaluate() on the training split, dropout off; gap = train acc - val acc\n"
        "s/epoch: median fit() epoch, validation included"
    )
    header = f"{'masks':<14} {'train acc':>9} {'val acc':>8} {'gap':>7} {'val loss':>9} {'s/epoch':>8}"
    print(header)
    print("-" * len(header))
    for kind, train_acc, val_acc, val_loss, seconds in rows:
        print(
            f"{kind:<14} {train_acc:>9.3f} {val_acc:>8.3f} {train_acc - val_acc:>7.3f} "
            f"{val_loss:>9.3f} {seconds:>8.3f}"
        )

    plot(masks, histories, args.rate, args.out)
    # Broadcast over height and width: every channel is all kept or all dropped.
    check(
        np.all(channel == channel[:, :1, :1, :]),
        "channel-wise masks constant over each 8x8 map",
    )


if __name__ == "__main__":
    main()
