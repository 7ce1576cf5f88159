"""Evaluation metrics on hand-made Label Studio results, and the promotion gate."""

from __future__ import annotations

import pytest

from converters.label_config import parse_label_config
from ml_backend.evaluation import (
    EvalReport,
    box_iou,
    chrf,
    gate,
    match_boxes,
    normalize_answer,
    score_results,
)

CONFIG = parse_label_config(
    """<View><Image name="image" value="$image"/>
    <RectangleLabels name="box" toName="image"><Label value="cat"/><Label value="dog"/></RectangleLabels>
    <Choices name="colour" toName="image"><Choice value="red"/><Choice value="blue"/></Choices>
    <TextArea name="caption" toName="image"/>
    <Choices name="review" toName="image"><Choice value="accept"/><Choice value="reject"/></Choices>
    </View>"""
)


def rect(label: str, x: float, y: float, w: float, h: float) -> dict:
    return {"from_name": "box", "to_name": "image", "type": "rectanglelabels",
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}}  # fmt: skip


def choice(*values: str, name: str = "colour") -> dict:
    return {"from_name": name, "to_name": "image", "type": "choices", "value": {"choices": list(values)}}


def text(value: str) -> dict:
    return {"from_name": "caption", "to_name": "image", "type": "textarea", "value": {"text": [value]}}


def test_iou_of_boxes() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0


def test_boxes_match_one_to_one_with_the_same_label() -> None:
    gold = [("cat", (0.0, 0.0, 10.0, 10.0)), ("cat", (50.0, 50.0, 60.0, 60.0))]
    predicted = [("cat", (0.0, 0.0, 10.0, 11.0)), ("cat", (0.0, 0.0, 10.0, 10.0)), ("dog", (50.0, 50.0, 60.0, 60.0))]
    hits, ious = match_boxes(predicted, gold, 0.5)
    assert hits == 1 and ious == [1.0]  # the duplicate cat and the wrong-label dog do not match


@pytest.mark.parametrize(
    ("hyp", "ref", "expected"),
    [("red", "red", 1.0), ("", "", 1.0), ("red", "", 0.0), ("cat", "red", 0.0), ("一只猫", "一只猫", 1.0)],
)
def test_chrf_extremes(hyp: str, ref: str, expected: float) -> None:
    assert chrf(hyp, ref) == pytest.approx(expected)


def test_chrf_gives_partial_credit_in_order() -> None:
    assert 0 < chrf("a small red car", "a red car") < 1
    assert chrf("a red car", "a red car parked") > chrf("a blue bus", "a red car parked")
    assert chrf("猫坐在垫子上", "猫在垫子上") > 0.5  # no spaces needed


def test_answers_are_normalised_before_comparison() -> None:
    assert normalize_answer("  Red. ") == "red"
    assert normalize_answer("Ｒｅｄ！") == "red"
    assert normalize_answer("It's red") == "it's red"


def test_a_perfect_model_scores_one_and_an_empty_one_zero() -> None:
    gold = [
        [rect("cat", 10, 10, 20, 20), choice("red"), text("A cat."), choice("accept", name="review")],
        [rect("dog", 50, 50, 30, 30), choice("blue"), text("A dog on grass.")],
    ]
    perfect = score_results("perfect", CONFIG, gold, gold)
    assert perfect.score == 1.0
    assert {c.control: c.metric for c in perfect.controls} == {
        "box": "f1@iou0.5",
        "colour": "accuracy",
        "caption": "chrf",
    }
    empty = score_results("empty", CONFIG, [[], None], gold)
    assert empty.score == 0.0
    assert empty.failed == 1  # a failed task is a miss, not a skip
    assert empty.tasks == 2


def test_partial_answers_score_in_between() -> None:
    gold = [[rect("cat", 10, 10, 20, 20), choice("red"), text("a red square")],
            [rect("dog", 50, 50, 30, 30), choice("blue"), text("a blue square")]]  # fmt: skip
    predicted = [[rect("cat", 11, 11, 20, 20), rect("cat", 70, 0, 10, 10), choice("red"), text("A red square.")],
                 [choice("red"), text("a square")]]  # fmt: skip
    report = score_results("m", CONFIG, predicted, gold)
    by_name = {c.control: c for c in report.controls}
    assert by_name["box"].value == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    assert by_name["box"].extra["precision"] == pytest.approx(0.5)
    assert by_name["colour"].value == 0.5
    assert by_name["caption"].extra["exact_match"] == 0.5
    assert 0.5 < by_name["caption"].value < 1.0
    assert report.to_json()["controls"][0]["control"] == "box"


def test_the_gate_promotes_unless_worse_by_more_than_the_margin() -> None:
    def report(score: float, tasks: int = 10) -> EvalReport:
        return score_results("x", CONFIG, [[choice("red")]] * int(score * 10) + [[]] * (10 - int(score * 10)),
                             [[choice("red")]] * 10) if tasks else EvalReport("x", [], 0)  # fmt: skip

    assert gate(report(0.9), report(0.2), 0.0).promote
    refused = gate(report(0.2), report(0.9), 0.0)
    assert not refused.promote
    assert refused.reason.startswith("candidate 0.")  # names both scores and the margin
    assert "< current" in refused.reason and "margin 0.000" in refused.reason
    assert gate(report(0.8), report(0.9), 0.5).promote  # within the margin
    assert not gate(report(0.8), report(0.9), 0.0).promote
    empty = gate(EvalReport("c", [], 0), report(0.1), 0.0)
    assert not empty.promote and "no held-out" in empty.reason
