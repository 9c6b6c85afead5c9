"""Segmentation metrics against hand-computed values and scikit-learn; losses against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from training.losses import DiceCrossEntropyLoss, DiceLoss, FocalLoss, create_loss
from training.metrics import ConfusionMatrix, confusion_matrix, segmentation_metrics

# Hand example, rows = truth, cols = prediction:
#          pred 0  1  2
# truth 0 [     5, 1, 0]
# truth 1 [     2, 3, 1]
# truth 2 [     0, 1, 4]
HAND_CM = np.array([[5, 1, 0], [2, 3, 1], [0, 1, 4]])


def hand_pixels() -> tuple[np.ndarray, np.ndarray]:
    """Prediction and truth vectors with exactly HAND_CM as confusion matrix, plus ignored pixels."""
    truth, pred = [], []
    for t in range(3):
        for p in range(3):
            truth += [t] * int(HAND_CM[t, p])
            pred += [p] * int(HAND_CM[t, p])
    truth += [255, 255, 1]  # ignored: truth nodata twice, and a pixel without prediction
    pred += [0, 2, 255]
    return np.array(pred), np.array(truth)


def test_confusion_matrix_hand_example_and_ignore():
    pred, truth = hand_pixels()
    np.testing.assert_array_equal(confusion_matrix(pred, truth, 3), HAND_CM)
    # Streaming in uneven chunks gives the same matrix.
    cm = ConfusionMatrix(3)
    for chunk in np.array_split(np.arange(pred.size), [4, 5, 13]):
        cm.update(pred[chunk], truth[chunk])
    np.testing.assert_array_equal(cm.matrix, HAND_CM)
    cm.reset()
    assert cm.matrix.sum() == 0


def test_segmentation_metrics_hand_example():
    m = segmentation_metrics(HAND_CM, ["a", "b", "c"])
    a, b, c = m["per_class"]["a"], m["per_class"]["b"], m["per_class"]["c"]
    # class a: TP 5, FP 2, FN 1; class b: TP 3, FP 2, FN 3; class c: TP 4, FP 1, FN 1.
    assert a["iou"] == pytest.approx(5 / 8)
    assert b["iou"] == pytest.approx(3 / 8)
    assert c["iou"] == pytest.approx(4 / 6)
    assert a["dice"] == pytest.approx(10 / 13)
    assert b["dice"] == pytest.approx(6 / 11)
    assert c["dice"] == pytest.approx(8 / 10)
    assert (a["precision"], b["precision"], c["precision"]) == pytest.approx((5 / 7, 3 / 5, 4 / 5))
    assert (a["recall"], b["recall"], c["recall"]) == pytest.approx((5 / 6, 3 / 6, 4 / 5))
    assert (a["support"], b["support"], c["support"]) == (6, 6, 5)
    assert m["overall_accuracy"] == pytest.approx(12 / 17)
    assert m["miou"] == pytest.approx((5 / 8 + 3 / 8 + 4 / 6) / 3)
    assert m["macro_dice"] == pytest.approx((10 / 13 + 6 / 11 + 8 / 10) / 3)
    assert m["pixels"] == 17


def test_absent_class_is_nan_and_left_out_of_means():
    cm = np.zeros((4, 4), dtype=np.int64)
    cm[:3, :3] = HAND_CM
    m = segmentation_metrics(cm, ["a", "b", "c", "d"])
    d = m["per_class"]["d"]
    assert all(math.isnan(d[k]) for k in ("iou", "dice", "precision", "recall"))
    assert d["support"] == 0
    assert m["miou"] == pytest.approx((5 / 8 + 3 / 8 + 4 / 6) / 3)
    # Predicted but never true: IoU 0 (counts in mIoU), recall NaN, precision 0.
    cm[3, 3] = 0
    cm[0, 3] = 2
    m = segmentation_metrics(cm, ["a", "b", "c", "d"])
    d = m["per_class"]["d"]
    assert d["iou"] == 0.0 and d["precision"] == 0.0 and math.isnan(d["recall"])
    assert m["miou"] == pytest.approx((5 / 10 + 3 / 8 + 4 / 6 + 0.0) / 4)


def test_metrics_match_sklearn_on_random_data():
    rng = np.random.default_rng(3)
    n_classes = 5
    truth = rng.integers(0, n_classes, 5000)
    pred = np.where(rng.random(5000) < 0.6, truth, rng.integers(0, n_classes, 5000))
    truth[rng.random(5000) < 0.05] = 255
    # Class 4 is never predicted nor true among the kept pixels: it must drop out of the means.
    pred[pred == 4] = 0
    truth[truth == 4] = 255
    keep = truth != 255
    cm = confusion_matrix(pred, truth, n_classes)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(truth[keep], pred[keep], labels=range(n_classes)))
    m = segmentation_metrics(cm, [str(i) for i in range(n_classes)])
    t, p = truth[keep], pred[keep]
    assert m["miou"] == pytest.approx(skm.jaccard_score(t, p, average="macro"))
    assert m["macro_dice"] == pytest.approx(skm.f1_score(t, p, average="macro"))
    assert m["overall_accuracy"] == pytest.approx(skm.accuracy_score(t, p))
    per_iou = skm.jaccard_score(t, p, average=None, labels=range(4))
    per_f1 = skm.f1_score(t, p, average=None, labels=range(4))
    per_precision = skm.precision_score(t, p, average=None, labels=range(4))
    per_recall = skm.recall_score(t, p, average=None, labels=range(4))
    for i in range(4):
        c = m["per_class"][str(i)]
        assert (c["iou"], c["dice"]) == pytest.approx((per_iou[i], per_f1[i]))
        assert (c["precision"], c["recall"]) == pytest.approx((per_precision[i], per_recall[i]))
    assert math.isnan(m["per_class"]["4"]["iou"])


def test_confusion_matrix_rejects_undeclared_classes():
    with pytest.raises(ValueError, match="truth holds class 7"):
        confusion_matrix(np.array([0, 1]), np.array([7, 1]), 3)
    with pytest.raises(ValueError, match="prediction holds class 3"):
        confusion_matrix(np.array([3, 1]), np.array([0, 1]), 3)


# --- Losses -----------------------------------------------------------------------------------------


def confident_logits(target: torch.Tensor, n_classes: int, margin: float = 40.0) -> torch.Tensor:
    """Logits that put (almost) all probability on the target class."""
    return F.one_hot(target.clamp_max(n_classes - 1), n_classes).movedim(-1, 1).float() * margin


def test_dice_loss_is_zero_for_perfect_prediction():
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, 0, :4] = 255
    logits = confident_logits(target, 4)
    logits[0, :, 0, :4] = torch.randn(4, 4)  # anything under ignored pixels
    assert DiceLoss(smooth=1.0)(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert DiceLoss(smooth=0.0)(logits[:, :3], target).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_loss_hand_computed_two_class_example():
    # 4 pixels; softmax probabilities of class 1: 0.8, 0.6, 0.3, 0.1 (logits log(p / (1 - p)) for class 1, 0 for 0)
    p1 = torch.tensor([0.8, 0.6, 0.3, 0.1])
    logits = torch.stack([torch.zeros(4), torch.log(p1 / (1 - p1))]).reshape(1, 2, 2, 2)
    target = torch.tensor([1, 1, 0, 0]).reshape(1, 2, 2)
    # class 1: intersection 0.8 + 0.6 = 1.4; sum p = 1.8, sum t = 2 -> dice 2.8 / 3.8
    # class 0: p0 = 0.2, 0.4, 0.7, 0.9; intersection 0.7 + 0.9 = 1.6; sum p = 2.2, sum t = 2 -> dice 3.2 / 4.2
    expected = 1 - (2.8 / 3.8 + 3.2 / 4.2) / 2
    assert DiceLoss(smooth=0.0)(logits, target).item() == pytest.approx(expected, rel=1e-5)
    # smooth = 1: (2 I + 1) / (P + T + 1)
    expected_smooth = 1 - (3.8 / 4.8 + 4.2 / 5.2) / 2
    assert DiceLoss(smooth=1.0)(logits, target).item() == pytest.approx(expected_smooth, rel=1e-5)


def test_focal_with_gamma_zero_is_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 7)
    target = torch.randint(0, 5, (2, 6, 7))
    target[1, :2] = 255
    expected = F.cross_entropy(logits, target, ignore_index=255)
    assert FocalLoss(gamma=0.0)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0])
    expected_w = F.cross_entropy(logits, target, weight=weight, ignore_index=255)
    assert FocalLoss(gamma=0.0, weight=weight)(logits, target).item() == pytest.approx(expected_w.item(), rel=1e-6)
    assert create_loss("ce")(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    # gamma > 0 down-weights easy pixels: strictly smaller than CE.
    assert FocalLoss(gamma=2.0)(logits, target).item() < expected.item()


def test_focal_hand_value():
    # One pixel, p_y = 0.25: loss = -(0.75 ** 2) * log(0.25)
    logits = torch.log(torch.tensor([0.25, 0.75])).reshape(1, 2, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    assert FocalLoss(gamma=2.0)(logits, target).item() == pytest.approx(-(0.75**2) * math.log(0.25), rel=1e-6)


@pytest.mark.parametrize("name", ["dice_ce", "focal", "ce", "dice"])
def test_ignored_pixels_do_not_change_the_loss(name):
    torch.manual_seed(1)
    loss = create_loss(name)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8))
    target[:, :3] = 255
    other = logits.detach().clone()
    other[:, :, :3] = torch.randn(2, 4, 3, 8) * 10  # different logits under ignored pixels only
    assert loss(logits, target).item() == pytest.approx(loss(other, target).item(), rel=1e-6)
    loss(logits, target).backward()
    assert torch.all(logits.grad[:, :, :3] == 0)
    # An all-ignored batch gives 0, not NaN.
    assert loss(logits, torch.full_like(target, 255)).item() == 0.0


def test_dice_ce_combines_its_parts():
    torch.manual_seed(2)
    logits = torch.randn(1, 3, 5, 5)
    target = torch.randint(0, 3, (1, 5, 5))
    combined = DiceCrossEntropyLoss(dice_weight=0.3, ce_weight=2.0)(logits, target)
    parts = 0.3 * DiceLoss()(logits, target) + 2.0 * F.cross_entropy(logits, target)
    assert combined.item() == pytest.approx(parts.item(), rel=1e-6)
    focal = DiceCrossEntropyLoss(focal=True, gamma=2.0)(logits, target)
    assert focal.item() == pytest.approx((DiceLoss()(logits, target) + FocalLoss(2.0)(logits, target)).item())
    with pytest.raises(ValueError, match="unknown loss 'lovasz'"):
        create_loss("lovasz")
