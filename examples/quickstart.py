"""Fits a small Sequential MLP with `keras_dropout_variants.Dropout` on digits.

Runs under any backend: `KERAS_BACKEND=jax python examples/quickstart.py`.
The data is scikit-learn's bundled 8x8 digits: nothing is downloaded.
"""

import argparse

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_dropout_variants as kdv


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.5, random_state=args.seed, stratify=y
    )

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
    # Inference is deterministic: dropout is off outside training.
    same = np.array_equal(model.predict(x_val, verbose=0), model.predict(x_val, verbose=0))
    print(f"train accuracy {train_acc:.3f}, validation accuracy {val_acc:.3f}")
    print(f"dropout steps taken: {int(keras.ops.convert_to_numpy(model.layers[1].counter))}")
    print(f"predictions deterministic: {same}")


if __name__ == "__main__":
    main()
