"""Verdict decisions: probabilities as always, plus whether the model abstained and why."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.abstain.models import cnn_model, scans
from tumord.abstain.judge import AbstainSettings, judge
from tumord.config import ConfigError, load_config
from tumord.nn.losses import softmax


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return cnn_model(tmp_path_factory.mktemp("m") / "m.npz")


def text_frames(n: int) -> np.ndarray:
    frames = []
    for i in range(n):
        img = np.zeros((64, 64), np.uint8)
        cv2.putText(img, f"ID {i}", (4, 36), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 255, 2)
        frames.append(img)
    return np.stack(frames)


def test_scans_like_the_training_data_mostly_pass_and_far_out_inputs_abstain(model):
    fresh = judge(model, scans(60, 99)[0])
    assert np.mean([j.abstained for j in fresh]) <= 0.15  # the threshold lets 95% of validation through
    noise = np.random.default_rng(0).integers(0, 256, (10, 64, 64), dtype=np.uint8)
    for j in judge(model, np.concatenate([noise, text_frames(5)])):
        assert j.abstained and j.reasons[-1].startswith("unlike the training scans (blocks feature score")
        assert j.method == "blocks"  # the default
        assert j.probabilities.shape == (2,) and j.probabilities.sum() == pytest.approx(1, abs=1e-5)


def test_probabilities_are_those_of_plain_prediction(model):
    images = scans(8, 5)[0]
    np.testing.assert_allclose(np.stack([j.probabilities for j in judge(model, images)]), model.predict(images),
                               rtol=1e-5, atol=1e-6)


def test_input_check_reasons_come_first_and_disabling_abstention_clears_them(model):
    images = scans(2, 5)[0]
    (j, _) = judge(model, images, [["too small"], []])
    assert j.reasons[0] == "too small" and j.fields()["abstained"] is True
    off = judge(model, text_frames(2), [["blank"], []], AbstainSettings(enabled=False))
    assert [x.abstained for x in off] == [False, False] and off[0].distance is None


def test_a_lower_accept_share_abstains_more(model):
    images = scans(60, 11)[0]
    strict = judge(model, images, None, AbstainSettings(accept_share=0.5))
    loose = judge(model, images, None, AbstainSettings(accept_share=0.99))
    assert sum(j.abstained for j in strict) > sum(j.abstained for j in loose)


@pytest.mark.parametrize("method", ["knn", "mahalanobis", "mahalanobis_previous"])
def test_each_distance_is_a_setting(model, method):
    (j,) = judge(model, text_frames(1), None, AbstainSettings(method=method))
    assert j.method == method and j.fields()["feature_distance"]["method"] == method
    assert j.reasons[-1].startswith("unlike the training scans (feature distance")


def test_the_combined_method_is_a_setting_and_says_so_in_the_verdict(model):
    assert load_config(None, ["abstain.method=combined"])["abstain"]["method"] == "combined"
    settings = AbstainSettings(method="combined")
    (far,) = judge(model, text_frames(1), None, settings)
    assert far.abstained and far.reasons[-1].startswith("unlike the training scans (combined feature score")
    assert far.fields()["feature_distance"]["method"] == "combined"
    assert far.threshold == pytest.approx(model.reference.threshold(0.95, "combined"))
    fresh = judge(model, scans(60, 99)[0], None, settings)
    assert np.mean([j.abstained for j in fresh]) <= 0.15


def test_an_accept_share_outside_zero_to_one_and_an_unknown_method_are_config_errors():
    with pytest.raises(ConfigError, match="abstain.accept_share = 95"):
        load_config(None, ["abstain.accept_share=95"])
    with pytest.raises(ConfigError, match="abstain.method = 'vim'"):
        load_config(None, ["abstain.method=vim"])


def test_features_are_the_block_before_s_and_the_pooled_channel_means_beside_plain_prediction_s_logits(model):
    """The network split in three parts gives the same logits as prediction, and each layer's
    features are the channel means of that layer's output."""
    from tumord.model.features import features_and_logits, previous_block_end
    from tumord.model.predict import to_input

    images = scans(5, 21)[0]
    feats, logits = features_and_logits(model.net, images, batch_size=2)
    np.testing.assert_allclose(softmax(logits), model.predict(images), rtol=1e-5, atol=1e-6)
    x = to_input(images, model.net.input_shape)
    cut = previous_block_end(model.net)
    assert model.net.spec[cut]["type"] == "relu"
    for layer in model.net.layers[: cut + 1]:
        x = layer.forward(x)
    np.testing.assert_allclose(feats["previous"], x.mean(axis=(2, 3)), rtol=1e-4, atol=1e-5)
    for i in range(cut + 1, len(model.net.layers)):
        if model.net.spec[i]["type"] == "globalavgpool":
            np.testing.assert_allclose(feats["pooled"], x.mean(axis=(2, 3)), rtol=1e-4, atol=1e-5)
            break
        x = model.net.layers[i].forward(x)
    else:
        raise AssertionError("no global average pool after the block before")
    assert feats["previous"].shape == (5, 8) and feats["pooled"].shape == (5, 16)
