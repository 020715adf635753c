"""A small Sequential model with `Dropout`, trained with `fit()` on each backend."""

import os

import keras
import numpy as np
import pytest

from conftest import BACKEND, to_np
import keras_dropout_variants as kdv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def classification_data(n=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 20)).astype("float32")
    w = rng.normal(size=(20, 4))
    y = np.argmax(x @ w + 0.1 * rng.normal(size=(n, 4)), axis=1)
    return x, y


def test_sequential_fit_predict_save_reload(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = classification_data()
    model = keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(64, activation="relu"),
            kdv.Dropout(0.3, seed=1),
            keras.layers.Dense(64, activation="relu"),
            kdv.Dropout(0.3, noise_shape=(None, 64), seed=2),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=12, verbose=0)
    losses = history.history["loss"]
    # Seen: the loss falls to 0.39-0.42 of its first epoch's value.
    assert losses[-1] < 0.6 * losses[0], losses
    # Inference (no dropout) on the training data: well above chance (0.25).
    assert model.evaluate(x, y, verbose=0)[1] > 0.75  # seen: 0.89-0.93

    first = model.predict(x, verbose=0)
    np.testing.assert_array_equal(first, model.predict(x, verbose=0))

    path = str(tmp_path / "mlp.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), first)
    for ours, theirs in zip(model.layers, loaded.layers):
        if isinstance(ours, kdv.Dropout):
            assert theirs.get_config() == ours.get_config()
            assert int(to_np(theirs.counter)) == int(to_np(ours.counter)) == 12 * 16


def test_readme_examples_run_as_pasted():
    # In this process, whose Keras already runs the leg's backend: the blocks
    # import nothing else that depends on it.
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = [b.split("```", 1)[0] for b in f.read().split("```python\n")[1:]]
    assert len(blocks) >= 2
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


@pytest.mark.slow
def test_compiled_fit_takes_the_same_steps_as_eager_fit():
    # The backward pass must use each step's own masks also where a compiler
    # recomputes them (torch.compile's partitioner does, from the counter
    # variable, after the step assigned the next value) or where a custom
    # gradient redraws them (DropConnect with mask_per="example"). A wrong
    # mask changes a weight update by its full size (~1e-2 here).
    x, y = classification_data(n=64)

    def three_steps(jit_compile):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((20,)),
            kdv.DropConnectDense(16, rate=0.3, activation="relu", seed=1),
            kdv.Dropout(0.4, seed=2),
            kdv.DropConnectDense(8, rate=0.3, activation="relu", seed=3,
                                 mask_per="example", drop_bias=True),
            keras.layers.Dense(4, activation="softmax"),
        ])
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy",
                      jit_compile=jit_compile, run_eagerly=not jit_compile and BACKEND != "tensorflow")
        model.fit(x, y, batch_size=16, epochs=1, steps_per_epoch=3, shuffle=False, verbose=0)
        return model.get_weights()

    for eager, fast in zip(three_steps(False), three_steps(True)):
        np.testing.assert_allclose(fast, eager, rtol=1e-5, atol=1e-6)
