"""Structured dropout in a small residual CNN: elements, channels, blocks, paths.

Dropout's masks can follow the structure of a network's features:

    kdv.Dropout(rate)                         # single activations
    kdv.SpatialDropout2D(rate)                # whole channels (feature maps)
    kdv.DropBlock2D(rate, block_size=3)       # square blocks of each channel
    kdv.DropPath(rate)                        # a whole residual branch, per example

Each sits at the end of every residual branch, `x + layer(branch(x))`.
DropBlock (Ghiasi et al., 2018) ramps its rate up from 0, here linearly over
the first half of the epochs with `kdv.callbacks.RateSchedule`, which sets
it inside the compiled `fit()` at each epoch's start. DropPath (stochastic
depth, Huang et al., 2016) drops deeper blocks more often, with the rates
`kdv.drop_path_rates(blocks, max_rate)` (0 for the first block).

The script upsamples scikit-learn's bundled 8x8 digits to 16x16 (each pixel
a 2x2 square; nothing is downloaded), so that 3x3 blocks fit the feature
maps, and trains the same residual CNN (a stem convolution, three residual
blocks of two 3x3 convolutions with batch normalization, global average
pooling) five times: with no regularizer and with each layer above (same
seeds and data order). It
prints the accuracy table (train accuracy measured with `evaluate`, dropout
off) and the DropBlock rate of each epoch, and draws the masks each layer
draws on the same feature map at the first step above the validation
curves.

Run under any backend:

    KERAS_BACKEND=jax python examples/structured_dropout.py
    KERAS_BACKEND=torch python examples/structured_dropout.py --quick
"""

import statistics

import numpy as np

from _common import (
    EpochLog, ExampleParser, check, digits_split, fit, grid_image, import_keras,
    plot_val_accuracy, pyplot, save_figure,
)

VARIANTS = ("none", "Dropout", "SpatialDropout2D", "DropBlock2D", "DropPath")
BLOCKS = 3  # residual blocks
FILTERS = 16  # channels of every feature map
SIZE = 16  # the digits, upsampled from 8x8
BLOCK_SIZE = 3  # DropBlock's blocks
SHOWN = 4  # examples and channels drawn per mask

parser = ExampleParser(
    __doc__, "structured_dropout", epochs=30, train_size=500, batch_size=32,
    quick={"epochs": 1, "train_size": 128},
)
parser.add_argument(
    "--rate", type=float, default=0.15,
    help="rate of Dropout, SpatialDropout2D and DropBlock2D (its target) (default 0.15)",
)
parser.add_argument(
    "--drop-path-rate", type=float, default=0.2,
    help="DropPath's rate in the last block; drop_path_rates gives the others (default 0.2)",
)
# Parsed before the slow imports: --help and usage errors answer at once.
args = parser.parse_args()
keras = import_keras()

import keras_dropout_variants as kdv  # noqa: E402


def regularizer(variant, block, seed):
    """The layer at the end of residual branch `block` (None for "none")."""
    seed = seed + 1 + block  # one seed per layer, the same in every variant
    if variant == "none":
        return None
    if variant == "DropBlock2D":
        return kdv.DropBlock2D(args.rate, block_size=BLOCK_SIZE, seed=seed)
    if variant == "DropPath":
        return kdv.DropPath(kdv.drop_path_rates(BLOCKS, args.drop_path_rate)[block], seed=seed)
    return getattr(kdv, variant)(args.rate, seed=seed)


def conv_bn(x, relu):
    """A 3x3 convolution, batch normalization and, where `relu`, ReLU."""
    x = keras.layers.Conv2D(FILTERS, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    return keras.layers.Activation("relu")(x) if relu else x


def build_model(variant, seed):
    keras.utils.set_random_seed(seed)  # the same initial weights for each variant
    inputs = keras.Input((SIZE, SIZE, 1))
    x = conv_bn(inputs, relu=True)
    for block in range(BLOCKS):
        branch = conv_bn(conv_bn(x, relu=True), relu=False)
        layer = regularizer(variant, block, seed)
        if layer is not None:
            branch = layer(branch)
        x = keras.layers.Activation("relu")(keras.layers.Add()([x, branch]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name=variant)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def drop_block_ramp(epochs, target):
    """DropBlock's rate for each epoch (from 0): 0 at the first, rising
    linearly to `target` at the middle of training, then `target` (just
    `target` when training lasts one epoch)."""
    ramp_end = min(epochs - 1, max(1, epochs // 2))

    def schedule(epoch):
        return target if ramp_end == 0 else target * min(1.0, epoch / ramp_end)

    return schedule


class Progress(EpochLog, keras.callbacks.Callback):
    """fit() progress lines and epoch times; and the rate of `watched`
    (a layer) in each epoch, as a `RateSchedule` set it."""

    def __init__(self, prefix, log_every, watched=None):
        super().__init__(prefix, log_every)
        self.watched, self.rates = watched, []

    def measure(self):
        if self.watched is not None:
            self.rates.append(self.watched.rate)

    def describe(self, logs):
        line = super().describe(logs)
        return line if self.watched is None else f"{line} - DropBlock rate {self.rates[-1]:.3f}"


def first_step_masks(batch_size, seed):
    """What each variant's last-block layer keeps at the first training step.

    A fresh layer with that layer's arguments (DropBlock at its target rate,
    DropPath at the last block's rate), applied once in training to ones of
    the feature map's shape (batch, 16, 16, FILTERS): its counter is at 0, as
    the model's is at its first step. Returns 0/1 arrays of that shape.
    """
    ones = np.ones((batch_size, SIZE, SIZE, FILTERS), dtype="float32")
    masks = {}
    for variant in VARIANTS[1:]:
        layer = regularizer(variant, BLOCKS - 1, seed)
        masks[variant] = keras.ops.convert_to_numpy(layer(ones, training=True)) != 0
    return masks


def in_whole_blocks(dropped, size):
    """Whether every dropped unit lies in a fully dropped `size x size` window
    inside the map: `dropped` (batch, h, w, channels) is a union of blocks."""
    windows = np.lib.stride_tricks.sliding_window_view(dropped, (size, size), axis=(1, 2))
    full = windows.all(axis=(-2, -1))  # (batch, h - size + 1, w - size + 1, channels)
    covered = np.zeros_like(dropped)
    for i in range(size):
        for j in range(size):
            covered[:, i:i + full.shape[1], j:j + full.shape[2], :] |= full
    return np.array_equal(covered, dropped)


def tile(masks):
    """Examples down, channels across: (examples, h, w, channels) 0/1 maps in a
    grid separated by gray lines."""
    return grid_image(masks.transpose(0, 3, 1, 2))


def plot(masks, histories, ramp, out):
    fig = pyplot().figure(figsize=(13, 7.5))
    grid = fig.add_gridspec(2, 4, height_ratios=(1, 1), hspace=0.35, wspace=0.25)
    path_rate = kdv.drop_path_rates(BLOCKS, args.drop_path_rate)[-1]
    rates = {"Dropout": args.rate, "SpatialDropout2D": args.rate, "DropBlock2D": args.rate,
             "DropPath": path_rate}
    for k, (variant, mask) in enumerate(masks.items()):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(tile(mask[:SHOWN, :, :, :SHOWN]), cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{variant} (rate {rates[variant]:g})\nkept {mask.mean():.2f}", fontsize=10)
        ax.set_xlabel("channel →", fontsize=8)
        ax.set_ylabel("example ↓", fontsize=8)
    plot_val_accuracy(fig.add_subplot(grid[1, :3]), histories, "regularizer")
    ax = fig.add_subplot(grid[1, 3])
    ax.step(np.arange(1, len(ramp) + 1), ramp, where="mid", color="C3")
    ax.set_ylim(0, max(args.rate, 1e-3) * 1.15)
    ax.set_xlabel("epoch")
    ax.set_title("DropBlock2D rate (RateSchedule)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.suptitle(
        f"Masks of the last residual block at the first training step, {SHOWN} examples x "
        f"{SHOWN} of {FILTERS} channels of the 16x16 map (white = kept), and training curves "
        f"({keras.backend.backend()} backend)",
        fontsize=10,
    )
    save_figure(fig, out, bbox_inches="tight")


def main():
    x_train, x_val, y_train, y_val = digits_split(args.train_size, args.seed, shape=(8, 8, 1))
    # Each pixel a 2x2 square: 16x16 images, where 3x3 blocks fit the maps.
    x_train, x_val = (x.repeat(2, axis=1).repeat(2, axis=2) for x in (x_train, x_val))
    print(
        f"backend: {keras.backend.backend()}; {len(x_train)} training and "
        f"{len(x_val)} validation images of {SIZE}x{SIZE}x1 (8x8 digits upsampled)"
    )
    path_rates = kdv.drop_path_rates(BLOCKS, args.drop_path_rate)
    print(f"DropPath rates per block: {', '.join(f'{r:g}' for r in path_rates)}")

    masks = first_step_masks(args.batch_size, args.seed)
    print("first-step keep fraction, last block: " + ", ".join(
        f"{variant} {mask.mean():.3f}" for variant, mask in masks.items()
    ))

    histories, rows, ramp_layers, ramp_rates = {}, [], [], []
    schedule = drop_block_ramp(args.epochs, args.rate)
    for variant in VARIANTS:
        print(f"\n== {variant} ==", flush=True)
        model = build_model(variant, args.seed)
        callbacks = []
        watched = None
        if variant == "DropBlock2D":
            ramp_layers = [layer for layer in model.layers if isinstance(layer, kdv.DropBlock2D)]
            watched = ramp_layers[0]
            callbacks.append(kdv.callbacks.RateSchedule(ramp_layers, schedule))
        # After the schedule: it records the rate the schedule set.
        progress = Progress(f"[{variant}]", log_every=max(1, args.epochs // 5), watched=watched)
        callbacks.append(progress)
        history = fit(model, (x_train, y_train), (x_val, y_val), args, callbacks=callbacks, verbose=0)
        histories[variant] = history.history
        if watched is not None:
            ramp_rates = progress.rates
        train_acc = model.evaluate(x_train, y_train, batch_size=1024, verbose=0)[1]
        val_acc = history.history["val_accuracy"]
        # The first epoch includes tracing/compilation.
        seconds = statistics.median(progress.seconds[1:] or progress.seconds)
        rows.append((variant, train_acc, val_acc[-1], max(val_acc), history.history["val_loss"][-1], seconds))

    print(
        f"\nbackend {keras.backend.backend()}, {args.epochs} epochs, {args.train_size} training "
        f"images; rate {args.rate} (DropBlock2D: its target, block {BLOCK_SIZE}), DropPath "
        f"rates {', '.join(f'{r:g}' for r in path_rates)}\n"
        "train acc: evaluate() on the training split, dropout off; gap = train acc - val acc\n"
        "s/epoch: median fit() epoch, validation included"
    )
    header = (
        f"{'regularizer':<17} {'train acc':>9} {'val acc':>8} {'best val':>8} {'gap':>7} "
        f"{'val loss':>9} {'s/epoch':>8}"
    )
    print(header)
    print("-" * len(header))
    for variant, train_acc, val_acc, best, val_loss, seconds in rows:
        print(
            f"{variant:<17} {train_acc:>9.3f} {val_acc:>8.3f} {best:>8.3f} "
            f"{train_acc - val_acc:>7.3f} {val_loss:>9.3f} {seconds:>8.3f}"
        )
    print("\nDropBlock2D rate per epoch (RateSchedule): " + ", ".join(f"{r:.3f}" for r in ramp_rates))

    plot(masks, histories, ramp_rates, args.out)

    dropped = ~masks["DropBlock2D"]
    check(
        dropped.any() and in_whole_blocks(dropped, BLOCK_SIZE),
        f"DropBlock2D drops whole {BLOCK_SIZE}x{BLOCK_SIZE} blocks: each dropped unit lies in "
        "a fully dropped window inside the map",
    )
    spatial = masks["SpatialDropout2D"]
    check(np.all(spatial == spatial[:, :1, :1, :]), "SpatialDropout2D masks constant over each channel")
    path = masks["DropPath"]
    per_example = path.reshape(len(path), -1)
    check(
        np.all(per_example == per_example[:, :1]) and 0 < per_example[:, 0].mean() < 1,
        "DropPath masks constant per example (some examples dropped, some kept)",
    )
    check(
        ramp_rates[0] == schedule(0) and ramp_rates[-1] == args.rate
        and all(layer.rate == args.rate for layer in ramp_layers),
        f"RateSchedule ramped DropBlock2D from {schedule(0):g} to its target {args.rate:g}",
    )
    if args.epochs > 1:
        # At rate 0 DropBlock passes its input through: with the same weights
        # and batches, the first epoch's training loss is the plain model's
        # (to float rounding: under torch the gradients can differ in the last
        # bits, which grow over the epoch's steps).
        none_loss, block_loss = histories["none"]["loss"][0], histories["DropBlock2D"]["loss"][0]
        check(
            abs(none_loss - block_loss) < 1e-3,
            f"first epoch at DropBlock rate 0 trains as without it (loss {block_loss:.5f} vs "
            f"{none_loss:.5f})",
        )


if __name__ == "__main__":
    main()
