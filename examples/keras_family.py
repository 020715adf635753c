"""The Keras dropout family on the package's engine, side by side.

Swapping `keras.layers.X` for `kdv.X` keeps a model's arguments and
behaviour and makes its masks and noise the same on every backend:

    kdv.Dropout(rate)             kdv.SpatialDropout2D(rate)
    kdv.GaussianDropout(rate)     kdv.AlphaDropout(rate)
    kdv.GaussianNoise(stddev)

The figure applies each layer, in training, to the same digit (the spatial
layer to a 4-channel copy of it, so that whole channels show): the first
step's mask or noise, drawn from the layer's seed. The table trains the
same small CNN on scikit-learn's bundled digits with each layer after its
first convolution (AlphaDropout with SELU activations, as it is meant for),
same seeds and data order, and reports train and validation accuracy.

Run under any backend:

    KERAS_BACKEND=jax python examples/keras_family.py
    KERAS_BACKEND=torch python examples/keras_family.py --quick
"""

import numpy as np

from _common import (
    EpochLog, ExampleParser, check, digits_split, fit, import_keras, pyplot, save_figure,
)

LAYERS = ("none", "Dropout", "SpatialDropout2D", "GaussianDropout", "AlphaDropout", "GaussianNoise")

parser = ExampleParser(
    __doc__, "keras_family", epochs=30, train_size=500, batch_size=32,
    quick={"epochs": 1, "train_size": 128},
)
parser.add_argument("--rate", type=float, default=0.2, help="rate (stddev for GaussianNoise)")
# Parsed before the slow imports: --help and usage errors answer at once.
args = parser.parse_args()
keras = import_keras()

import keras_dropout_variants as kdv  # noqa: E402


def noise_layer(name, rate, seed):
    return None if name == "none" else getattr(kdv, name)(rate, seed=seed)


def build_model(name, rate, seed):
    keras.utils.set_random_seed(seed)  # the same initial weights for each layer
    activation = "selu" if name == "AlphaDropout" else "relu"
    init = "lecun_normal" if name == "AlphaDropout" else "glorot_uniform"
    layers = [keras.Input((8, 8, 1)),
              keras.layers.Conv2D(32, 3, padding="same", activation=activation, kernel_initializer=init)]
    if name != "none":
        layers.append(noise_layer(name, rate, seed + 1))
    layers += [
        keras.layers.Conv2D(64, 3, padding="same", activation=activation, kernel_initializer=init),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ]
    model = keras.Sequential(layers, name=name)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class Progress(EpochLog, keras.callbacks.Callback):
    """fit() progress lines and epoch times (`EpochLog`'s defaults)."""


def first_step(name, rate, seed, digit):
    """The layer's first training output on the digit (4 channels for the
    spatial layer), from a fresh layer: counter 0, as at the first step."""
    image = np.repeat(digit[None], 4, axis=-1) if name == "SpatialDropout2D" else digit[None]
    return keras.ops.convert_to_numpy(noise_layer(name, rate, seed)(image, training=True))[0]


def plot(digit, outputs, rate, out):
    fig, axes = pyplot().subplots(1, len(outputs) + 4, figsize=(1.9 * (len(outputs) + 4), 2.6))
    panels = [("input", digit[..., 0])]
    for name, y in outputs.items():
        if name == "SpatialDropout2D":
            panels += [(f"{name}\nchannel {c}", y[..., c]) for c in range(4)]
        else:
            panels.append((name, y[..., 0]))
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(image, cmap="gray", vmin=-0.5, vmax=1.5, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"One digit through each layer, first training step (rate {rate}; "
                 f"the same on every backend)", fontsize=10)
    save_figure(fig, out, bbox_inches="tight")


def main():
    x_train, x_val, y_train, y_val = digits_split(args.train_size, args.seed, shape=(8, 8, 1))
    print(f"backend: {keras.backend.backend()}; {len(x_train)} training and "
          f"{len(x_val)} validation images of 8x8x1")
    digit = x_train[0]
    outputs = {name: first_step(name, args.rate, args.seed + 1, digit) for name in LAYERS[1:]}

    rows = []
    for name in LAYERS:
        print(f"\n== {name} ==", flush=True)
        model = build_model(name, args.rate, args.seed)
        progress = Progress(f"[{name}]", log_every=max(1, args.epochs // 5))
        history = fit(model, (x_train, y_train), (x_val, y_val), args, callbacks=[progress], verbose=0)
        train_acc = model.evaluate(x_train, y_train, batch_size=1024, verbose=0)[1]
        rows.append((name, train_acc, history.history["val_accuracy"][-1], history.history["val_loss"][-1]))

    print(f"\nbackend {keras.backend.backend()}, {args.epochs} epochs, rate {args.rate}\n"
          "train acc: evaluate() on the training split, noise off; gap = train acc - val acc")
    header = f"{'layer':<17} {'train acc':>9} {'val acc':>8} {'gap':>7} {'val loss':>9}"
    print(header)
    print("-" * len(header))
    for name, train_acc, val_acc, val_loss in rows:
        print(f"{name:<17} {train_acc:>9.3f} {val_acc:>8.3f} {train_acc - val_acc:>7.3f} {val_loss:>9.3f}")

    plot(digit, outputs, args.rate, args.out)
    spatial = outputs["SpatialDropout2D"]
    check(all(np.all(spatial[..., c] == 0) or np.allclose(spatial[..., c], digit[..., 0] / (1 - args.rate))
              for c in range(4)), "SpatialDropout2D keeps or drops whole channels")
    dropout, scaled = outputs["Dropout"], digit / (1 - args.rate)
    check(np.all((dropout == 0) | np.isclose(dropout, scaled)) and 0 < np.mean(dropout != 0) < 1,
          "Dropout keeps single pixels (scaled by 1 / (1 - rate)) and zeroes the others")


if __name__ == "__main__":
    main()
