"""`kdv.convert`: Keras' dropout family replaced by the package's twins."""

import keras
import numpy as np
import pytest

from conftest import normal_data, steps_taken, to_np
import keras_dropout_variants as kdv

FAMILY = [
    (keras.layers.Dropout(0.3, noise_shape=(None, 1, 8)), kdv.Dropout),
    (keras.layers.SpatialDropout1D(0.2), kdv.SpatialDropout1D),
    (keras.layers.GaussianDropout(0.2), kdv.GaussianDropout),
    (keras.layers.AlphaDropout(0.1), kdv.AlphaDropout),
    (keras.layers.GaussianNoise(0.5), kdv.GaussianNoise),
]


def functional_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 4))
    h = keras.layers.Dense(8)(inputs)
    branches = [layer(h) for layer, _ in FAMILY]
    h = keras.layers.Add()(branches)
    h = keras.layers.BatchNormalization()(h)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(h))
    return keras.Model(inputs, outputs)


def test_convert_replaces_the_family_and_keeps_everything_else(tmp_path):
    model = functional_model()
    x = normal_data((6, 5, 4))
    norm = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)][0]
    norm.moving_mean.assign(np.arange(8, dtype="float32"))  # non-default state: copied
    twin = kdv.convert(model, seed=7)
    converted = [layer for layer in twin.layers if isinstance(layer, kdv.layers.base.StochasticLayer)]
    assert [type(layer) for layer in converted] == [cls for _, cls in FAMILY]
    for (keras_layer, _), layer in zip(FAMILY, converted):
        keys = set(keras_layer.get_config()) - {"seed"}
        assert {k: layer.get_config()[k] for k in keys if k != "dtype"} == {
            k: keras_layer.get_config()[k] for k in keys if k != "dtype"}
        assert steps_taken(layer) == 0
    assert len({layer.seed for layer in converted}) == len(converted)  # distinct seeds
    again = kdv.convert(model, seed=7)  # the same seeds, the same training step
    assert [layer.seed for layer in converted] == [
        layer.seed for layer in again.layers if isinstance(layer, kdv.layers.base.StochasticLayer)
    ]
    # Inference: the same predictions, bit for bit.
    np.testing.assert_array_equal(twin.predict(x, verbose=0), model.predict(x, verbose=0))
    path = str(tmp_path / "twin.keras")
    twin.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # Training draws from the engine: the same on every call of the same step.
    np.testing.assert_array_equal(to_np(twin(x, training=True)), to_np(again(x, training=True)))


def test_convert_sequential_and_nested_models():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), keras.layers.Dropout(0.5)])
    model = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dropout(0.2), keras.layers.Dense(1)])
    twin = kdv.convert(model, seed=1)
    assert isinstance(twin.layers[1], kdv.Dropout)
    assert isinstance(twin.layers[0].layers[1], kdv.Dropout)
    x = normal_data((3, 4))
    np.testing.assert_array_equal(twin.predict(x, verbose=0), model.predict(x, verbose=0))


def test_convert_without_seed_keeps_keras_seeds_or_draws_reproducibly():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5, seed=42), keras.layers.Dropout(0.5)])
    keras.utils.set_random_seed(3)
    first = [layer.seed for layer in kdv.convert(model).layers]
    keras.utils.set_random_seed(3)
    second = [layer.seed for layer in kdv.convert(model).layers]
    assert first[0] == 42 and first == second


def test_convert_errors():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dropout = keras.layers.Dropout(0.5)

        def call(self, x):
            return self.dropout(x)

    with pytest.raises(TypeError, match="needs a Sequential or functional model"):
        kdv.convert(Subclassed())
    with pytest.raises(TypeError, match="`model` must be a Sequential or functional keras.Model"):
        kdv.convert(keras.layers.Dense(2))
    model = keras.Sequential([keras.Input((4,)), keras.layers.GaussianDropout(1.0)])
    with pytest.raises(ValueError, match=r"'gaussian_dropout.*' \(GaussianDropout\) cannot be converted: `rate` must be below 1"):
        kdv.convert(model)
