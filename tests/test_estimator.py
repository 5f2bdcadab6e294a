"""DeepAutoDNNClassifier: scikit-learn's own estimator checks, and use in pipelines and searches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from deepautodnn.config import resolve_preset
from deepautodnn.estimator import DeepAutoDNNClassifier
from deepautodnn.utils.runtime import bf16_supported

EXPECTED_FAILURES = {
    # float32 oneDNN convolutions pick kernels by batch size, so a row's code can differ in the 7th
    # significant digit depending on which other rows share its batch; the check allows 1e-7.
    "check_methods_subset_invariance": "float32 convolution results depend on the batch at the 1e-7 level",
}


@parametrize_with_checks([DeepAutoDNNClassifier()], expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def quick(**kwargs) -> DeepAutoDNNClassifier:
    return DeepAutoDNNClassifier(**{"ae_epochs": 1, "dnn_epochs": 1, "finetune_epochs": 2, **kwargs})


@pytest.fixture(scope="module")
def small(data_dir):
    from deepautodnn.data.fashion_mnist import load_fashion_mnist

    images, labels = load_fashion_mnist("train", data_dir)
    return images[:1200], labels[:1200]


def test_fits_images_and_flat_rows_alike(small):
    images, labels = small
    a = quick().fit(images[:1000], labels[:1000])
    b = quick().fit(images[:1000].reshape(1000, 784), labels[:1000])
    assert a.image_side_ == 28 and a.n_features_in_ == 784
    np.testing.assert_array_equal(a.predict(images[1000:]), b.predict(images[1000:].reshape(200, 784)))
    assert a.score(images[1000:], labels[1000:]) > 0.45  # chance is 0.1; two short epochs on 1,000 images
    proba = a.predict_proba(images[1000:])
    assert proba.shape == (200, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    with torch.inference_mode():  # the fitted network's own softmax, on the images over 255
        expected = torch.softmax(a.model_(torch.from_numpy(images[1000:]).unsqueeze(1).float() / 255.0), 1)
    np.testing.assert_array_equal(proba, expected.numpy())
    assert list(a.classes_) == list(range(10))
    # The code of the preset this CPU trains for "fast" (`fast-fp32`'s is narrower, without bf16).
    code = resolve_preset("fast", bf16=bf16_supported(torch.device("cpu"))).model.latent_shape
    assert a.transform(images[1000:1005]).shape == (5, int(np.prod(code)))


def test_string_labels_and_pipeline(small):
    images, labels = small
    # Not in label order, so a mix-up between sorted names and class indices shows.
    names = np.array(["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"])
    pipe = Pipeline([("clf", quick())]).fit(images[:1000], names[labels[:1000]])
    clf = pipe.named_steps["clf"]
    assert list(clf.classes_) == sorted(names)
    predicted = pipe.predict(images[1000:])
    np.testing.assert_array_equal(predicted, clf.classes_[pipe.predict_proba(images[1000:]).argmax(1)])
    # The right names for the images: well above chance (0.1).
    assert np.mean(predicted == names[labels[1000:]]) > 0.3  # about 0.46; mixed-up names score near chance


def test_cross_val_score_and_grid_search(small):
    images, labels = small
    x, y = images[:600], labels[:600]
    scores = cross_val_score(quick(dnn_epochs=0), x, y, cv=2)
    assert scores.shape == (2,) and scores.min() > 0.25  # 300 training images per fold, chance 0.1
    # With neither DNN epochs nor fine-tuning the classifier keeps its random weights: a known loser.
    search = GridSearchCV(quick(dnn_epochs=0), {"finetune_epochs": [0, 2]}, cv=2).fit(x, y)
    results = search.cv_results_
    assert results["mean_test_score"][0] < 0.2
    # The same folds as cross_val_score's and a seeded fit: the same scores, to the last bit.
    np.testing.assert_array_equal([results[f"split{i}_test_score"][1] for i in range(2)], scores)
    assert search.best_params_ == {"finetune_epochs": 2} and search.best_score_ == scores.mean()
    assert search.best_estimator_.config_.train.finetune_epochs == 2  # the refit trained what won


def test_one_class_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 classes"):
        quick().fit(np.zeros((10, 784)), np.ones(10))
