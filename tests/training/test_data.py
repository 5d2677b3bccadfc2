"""Training data helpers of nucseg.training.data: what the initial model of a fine-tuning trained on."""

from __future__ import annotations

from nucseg.training.data import carried_quality_calibration, initial_training_images_given


def test_only_the_given_images_that_the_initial_model_trained_on_are_counted():
    initial = [f"dsb{i:03d}" for i in range(598)]  # the initial model's 598 training images
    own = {"train": ["mine_1", "mine_2"], "validation": ["mine_3"], "test": []}
    assert initial_training_images_given(own, initial) == 0  # nothing to say to someone training on their own
    mixed = {"train": ["mine_1", "dsb2018/dsb007", "dsb001"], "validation": ["mine_3"], "test": []}
    assert initial_training_images_given(mixed, initial) == 2  # bare and <dataset>/<image> names alike


def test_a_fine_tuned_model_carries_the_initial_calibration_over_and_says_so():
    from nucseg.inference.quality import QualityCalibration
    from nucseg.models.folder import read_model_config
    from nucseg.models.registry import resolve_model_path

    initial, _ = read_model_config(resolve_model_path("dsb2018"))
    carried = carried_quality_calibration("dsb2018")
    calibration = QualityCalibration.from_dict(carried)  # usable as it is
    assert calibration.weights == initial.quality["weights"] and calibration.threshold == initial.quality["threshold"]
    assert calibration.fitted_on.startswith("carried over from dsb2018 (fitted there on the 66 validation images")
    assert "not refitted" in calibration.fitted_on
    assert carried_quality_calibration(None) == {}


def test_a_calibration_carried_over_twice_names_each_step_once(tmp_path):
    import json
    import shutil

    from nucseg.models.registry import resolve_model_path

    once = tmp_path / "fine_tuned"  # a model fine-tuned from dsb2018, whose calibration was carried over
    once.mkdir()
    config = json.loads((resolve_model_path("dsb2018") / "config.json").read_text())
    config["quality"] = carried_quality_calibration("dsb2018")
    (once / "config.json").write_text(json.dumps(config))
    for weights in resolve_model_path("dsb2018").glob("weights.*"):
        shutil.copy(weights, once / weights.name)
    fitted_on = carried_quality_calibration(str(once))["fitted_on"]
    assert fitted_on.startswith(f"carried over from {once} (carried over from dsb2018 (fitted there on the 66 ")
    assert "fitted there on carried over" not in fitted_on
    assert fitted_on.endswith("); not refitted on this fine-tuning's validation images")
