import numpy as np
import torch
from sklearn.metrics import precision_recall_fscore_support

from deepautodnn.config import ModelConfig
from deepautodnn.inference.evaluate import classification_metrics, metrics_markdown, predict_proba
from deepautodnn.models.hybrid import DeepAutoDNN

NAMES = ("a", "b", "c")


def test_metrics_match_paper_formulas_and_sklearn():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    y_pred = np.array([0, 1, 0, 1, 2, 2, 2, 0, 2, 1])
    m = classification_metrics(y_true, y_pred, NAMES)
    assert m["accuracy"] == 7 / 10
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 1], [1, 0, 3]]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2], zero_division=0)
    for i, name in enumerate(NAMES):
        pc = m["per_class"][name]
        assert np.isclose(pc["precision"], p[i]) and np.isclose(pc["recall"], r[i])
        assert np.isclose(pc["f1"], f[i]) and pc["support"] == s[i]
    # Specificity = TN / (TN + FP); class "a": FP = 1 (one "c" predicted as "a"), TN = 6.
    assert np.isclose(m["per_class"]["a"]["specificity"], 6 / 7)
    assert np.isclose(m["macro"]["recall"], np.mean(r))


def test_class_never_predicted_gives_zero_not_nan():
    m = classification_metrics([0, 1, 2], [0, 0, 0], NAMES)
    assert m["per_class"]["b"]["precision"] == 0.0 and m["per_class"]["b"]["f1"] == 0.0


def test_markdown_has_every_class_and_the_accuracy():
    m = classification_metrics([0, 1, 2, 2], [0, 1, 2, 1], NAMES)
    md = metrics_markdown(m)
    assert "75.00%" in md
    for name in NAMES:
        assert f"| {name} |" in md
    assert "Specificity" in md and "Confusion matrix" in md


def test_predict_proba_is_the_models_softmax_in_eval_mode():
    torch.manual_seed(0)
    model = DeepAutoDNN(ModelConfig(encoder_channels=(4, 8), encoder_pool=(True, True), dnn_hidden=(16,)))
    images = np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    proba = predict_proba(model.train(), images)  # eval mode is its job: dropout would change the numbers
    assert not model.training and isinstance(proba, np.ndarray) and proba.dtype == np.float32
    with torch.inference_mode():
        expected = torch.softmax(model(torch.from_numpy(images).unsqueeze(1).float() / 255.0), 1).numpy()
    np.testing.assert_array_equal(proba, expected)
