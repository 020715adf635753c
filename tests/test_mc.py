"""`kdv.mc_predict`: Monte-Carlo dropout, reproducible and batch-independent."""

import keras
import numpy as np
import pytest

from conftest import normal_data, steps_taken, to_np
import keras_dropout_variants as kdv
from keras_dropout_variants import ops as kops


def classifier(with_norm=True):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((6,)), keras.layers.Dense(16, activation="relu")]
    if with_norm:
        layers.append(keras.layers.BatchNormalization())
    layers += [
        kdv.Dropout(0.3, seed=1),
        kdv.DropConnectDense(12, rate=0.3, seed=2, activation="relu"),
        kdv.DropConnectDense(12, rate=0.2, seed=3, mask_per="example"),
        kdv.GaussianNoise(0.1, seed=4),
        keras.layers.Dense(4, activation="softmax"),
    ]
    model = keras.Sequential(layers)
    if with_norm:  # moving statistics far from a batch's own
        norm = model.layers[1]
        norm.moving_mean.assign(np.full(16, 0.5, "float32"))
        norm.moving_variance.assign(np.full(16, 4.0, "float32"))
    return model


def test_samples_do_not_depend_on_the_batch_size():
    model, x = classifier(), normal_data((7, 6))
    runs = [kdv.mc_predict(model, x, samples=6, batch_size=b, return_samples=True) for b in (1, 4, 7)]
    for run in runs[1:]:
        # The masks are the same; the products' rounding may differ by batch.
        np.testing.assert_allclose(run.samples, runs[0].samples, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(run.mean, runs[0].mean, rtol=1e-5, atol=1e-6)
    assert runs[0].samples.shape == (6, 7, 4)
    assert not np.allclose(runs[0].samples[0], runs[0].samples[1])  # samples differ
    assert [steps_taken(layer) for layer in model.layers if hasattr(layer, "counter")] == [0, 0, 0, 0]


def test_masks_are_bit_identical_across_batchings_and_chunks():
    # A model of dropout alone: no product, so equal masks mean equal bits.
    inputs = keras.Input((5, 8))
    outputs = kdv.SpatialDropout1D(0.4, seed=6)(kdv.Dropout(0.5, seed=5)(inputs))
    model = keras.Model(inputs, outputs)
    x = normal_data((9, 5, 8))
    first = kdv.mc_predict(model, x, samples=5, batch_size=9, return_samples=True).samples
    for batch_size, max_rows in ((1, 4096), (4, 4096), (9, 9), (2, 5)):
        again = kdv.mc_predict(model, x, samples=5, batch_size=batch_size, max_rows=max_rows, return_samples=True)
        np.testing.assert_array_equal(again.samples, first)
    # Sample s is mask id mc_mask_id(0, s) for the global rows.
    for s in range(5):
        counter = kdv.mc_mask_id(0, s)
        want = kops.dropout(x, 0.5, seed=5, counter=counter)
        want = kops.dropout(want, 0.4, noise_shape=(None, 1, None), seed=6, counter=counter)
        np.testing.assert_array_equal(first[s], to_np(want))
    other = kdv.mc_predict(model, x, samples=5, seed=1, return_samples=True).samples
    assert not np.array_equal(other != 0, first != 0)


def test_batch_norm_stays_in_inference_mode():
    model, x = classifier(), normal_data((5, 6))
    one = kdv.mc_predict(model, x, samples=4, batch_size=1)
    whole = kdv.mc_predict(model, x, samples=4, batch_size=5)
    np.testing.assert_allclose(one.mean, whole.mean, rtol=1e-5, atol=1e-6)
    # With batch statistics (training=True), a batch of one row would
    # normalize every unit to 0: the predictions would not match.
    h = model.layers[0](x)
    norm = model.layers[1]
    np.testing.assert_allclose(to_np(norm(h)), to_np(norm(h, training=False)))


def test_drop_connect_draws_one_weight_mask_per_sample_for_every_input():
    layer = kdv.DropConnectDense(5, rate=0.5, seed=9, use_bias=False)
    model = keras.Sequential([keras.Input((7,)), layer])
    x = normal_data((11, 7))
    got = kdv.mc_predict(model, x, samples=3, batch_size=4, return_samples=True).samples
    for s in range(3):
        want = kops.drop_connect(x, layer.layer.kernel, 0.5, seed=9, counter=kdv.mc_mask_id(0, s))
        np.testing.assert_allclose(got[s], to_np(want), rtol=1e-5, atol=1e-6)


def test_entropy_and_mutual_information():
    model, x = classifier(), normal_data((8, 6))
    result = kdv.mc_predict(model, x, samples=10, return_samples=True)
    p = result.samples.astype(np.float64)
    mean = p.mean(axis=0)
    entropy = -(mean * np.log(mean)).sum(axis=-1)
    expected_mi = entropy - (-(p * np.log(p)).sum(axis=-1)).mean(axis=0)
    np.testing.assert_allclose(result.predictive_entropy, entropy, rtol=1e-6)
    np.testing.assert_allclose(result.mutual_information, expected_mi, rtol=1e-5, atol=1e-9)
    assert (result.mutual_information > 0).all()
    np.testing.assert_allclose(result.variance, p.var(axis=0), rtol=1e-5, atol=1e-9)
    # Not probabilities: no entropy.
    regression = keras.Sequential([keras.Input((6,)), kdv.Dropout(0.5, seed=1), keras.layers.Dense(2)])
    assert kdv.mc_predict(regression, x, samples=3).predictive_entropy is None


def test_inputs_as_datasets_generators_and_subclassed_models():
    model, x = classifier(with_norm=False), normal_data((10, 6))
    want = kdv.mc_predict(model, x, samples=3, return_samples=True).samples

    def generator():
        for start in range(0, 10, 3):
            yield x[start:start + 3], np.zeros(len(x[start:start + 3]))

    got = kdv.mc_predict(model, generator(), samples=3, return_samples=True).samples
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    tf = pytest.importorskip("tensorflow")
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(10))).batch(4)
    got = kdv.mc_predict(model, dataset, samples=3, return_samples=True).samples
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(4)
            self.dropout = kdv.Dropout(0.5, seed=3)

        def call(self, inputs, training=None):
            return self.dropout(self.dense(inputs), training=training)

    sub = Subclassed()
    samples = kdv.mc_predict(sub, x, samples=4, batch_size=3, return_samples=True).samples
    again = kdv.mc_predict(sub, x, samples=4, batch_size=10, return_samples=True).samples
    np.testing.assert_array_equal(samples == 0, again == 0)  # the same masks
    np.testing.assert_allclose(samples, again, rtol=1e-5, atol=1e-6)
    assert (samples == 0).any() and not np.array_equal(samples[0], samples[1])


def test_warnings_and_errors():
    keras_model = keras.Sequential([keras.Input((6,)), keras.layers.Dropout(0.5), keras.layers.Dense(2)])
    with pytest.warns(UserWarning, match=r"Keras' own dropout layers \['dropout.*'\] stay off.*kdv.convert"):
        with pytest.warns(UserWarning, match="none of the package's layers"):
            result = kdv.mc_predict(keras_model, normal_data((4, 6)), samples=2)
    assert result.variance.max() == 0
    converted = kdv.convert(keras_model, seed=0)
    assert kdv.mc_predict(converted, normal_data((4, 6)), samples=3).variance.max() > 0
    with pytest.raises(ValueError, match="`samples` must be a positive integer"):
        kdv.mc_predict(converted, normal_data((4, 6)), samples=0)
    with pytest.raises(ValueError, match="`seed` must be"):
        kdv.mc_predict(converted, normal_data((4, 6)), seed=-1)
