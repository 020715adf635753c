"""Fits a small Sequential MLP with `keras_dropout_variants.Dropout` on digits.

Runs under any backend: `KERAS_BACKEND=jax python examples/quickstart.py`.
The data is scikit-learn's bundled 8x8 digits: nothing is downloaded.
"""

import argparse

import numpy as np

from _common import check, digits_split, import_keras

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--seed", type=int, default=0)
# Parsed before the slow imports: --help and usage errors answer at once.
args = parser.parse_args()
keras = import_keras(extras=["sklearn"])

import keras_dropout_variants as kdv  # noqa: E402


def main():
    keras.utils.set_random_seed(args.seed)
    x_train, x_val, y_train, y_val = digits_split(0.5, args.seed)

    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu"),
            kdv.Dropout(0.5, seed=args.seed),
            keras.layers.Dense(256, activation="relu"),
            kdv.Dropout(0.5, seed=args.seed + 1),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    print(f"backend: {keras.backend.backend()}")
    model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=args.epochs,
        batch_size=64,
        verbose=2,
    )
    _, train_acc = model.evaluate(x_train, y_train, verbose=0)
    _, val_acc = model.evaluate(x_val, y_val, verbose=0)
    print(f"train accuracy {train_acc:.3f}, validation accuracy {val_acc:.3f}")
    print(f"dropout steps taken: {int(keras.ops.convert_to_numpy(model.layers[1].counter))}")
    # Inference is deterministic: dropout is off outside training.
    check(
        np.array_equal(model.predict(x_val, verbose=0), model.predict(x_val, verbose=0)),
        "predictions deterministic",
    )


if __name__ == "__main__":
    main()
