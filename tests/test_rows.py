"""Tasks shaped like Label Studio exports -> ms-swift rows, one mapping at a time, with the notes for what is left out."""

from __future__ import annotations

from typing import Any

import pytest

from converters.boxes import Box
from converters.label_config import LabelConfig, parse_label_config
from converters.rows import ImageFrame, RowOptions, TaskRows, build_rows, redaction_rects
from converters.samples import LabelStudioExport
from converters.tasks import parse_task

CONFIG = parse_label_config(
    """<View>
  <Image name="image" value="$image"/>
  <TextArea name="caption" toName="image"/>
  <Header value="$question"/>
  <TextArea name="answer" toName="image"/>
  <TextArea name="note" toName="image" question="Is anything unusual?"/>
  <RectangleLabels name="objects" toName="image">
    <Label value="cat"/><Label value="dog"/><Label value="redact"/>
  </RectangleLabels>
  <Choices name="weather" toName="image"><Choice value="sun"/><Choice value="rain"/></Choices>
  <Choices name="tags" toName="image" choice="multiple" question="Which apply?">
    <Choice value="indoor"/><Choice value="people"/><Choice value="text"/>
  </Choices>
  <Polygon name="outline" toName="image"/>
  <Choices name="review" toName="image"><Choice value="accept"/><Choice value="reject"/></Choices>
</View>"""
)
# The source was 2000x1000 (after EXIF); the written image is 1000x500.
FRAME = ImageFrame(
    path="/out/images/abc.jpg", sha256="abc", source_sha256="def", source="/data/upload/1/x.jpg",
    source_width=2000, source_height=1000, width=1000, height=500,
)  # fmt: skip
META = {
    "task_id": 1, "annotation_id": 1, "annotator": "1", "created_at": "2026-11-01T09:01:00+00:00",
    "updated_at": "2026-11-01T09:02:00+00:00", "source": "/data/upload/1/x.jpg", "source_sha256": "def",
    "image_sha256": "abc",
}  # fmt: skip


def rows_for(result: list[dict[str, Any]], data: dict[str, Any] | None = None, config: LabelConfig = CONFIG,
             options: RowOptions | None = None, marks: tuple[Box, ...] = ()) -> TaskRows:  # fmt: skip
    ls = LabelStudioExport()
    annotation = ls.annotation(result)
    task = parse_task(ls.task({"image": "/data/upload/1/x.jpg", **(data or {})}, [annotation]))
    return build_rows(task, task.annotations[0], config, FRAME, options or RowOptions(), detected_marks=marks)


def only(built: TaskRows, kind: str) -> list[dict[str, Any]]:
    return [row.data for row in built.rows if row.kind == kind]


def test_a_caption_becomes_prompt_to_text_with_metadata() -> None:
    ls = LabelStudioExport()
    built = rows_for([ls.textarea("caption", "  A black  cat on a mat. ")])
    assert [row.data for row in built.rows] == [{
        "messages": [
            {"role": "user", "content": "<image>Describe this image."},
            {"role": "assistant", "content": "A black cat on a mat."},
        ],
        "images": ["/out/images/abc.jpg"],
        "labelloop": {**META, "control": "caption", "kind": "caption"},
    }]  # fmt: skip
    assert built.notes == []


def test_vqa_pairs_of_an_image_become_one_conversation() -> None:
    ls = LabelStudioExport()
    result = [ls.textarea("answer", "Two.", "Grey."), ls.textarea("note", "No.")]
    built = rows_for(result, {"question": ["How many cats?", "What colour is the mat?"]})
    (row,) = only(built, "vqa")
    assert row["messages"] == [
        {"role": "user", "content": "<image>How many cats?"},
        {"role": "assistant", "content": "Two."},
        {"role": "user", "content": "What colour is the mat?"},
        {"role": "assistant", "content": "Grey."},
        {"role": "user", "content": "Is anything unusual?"},
        {"role": "assistant", "content": "No."},
    ]
    assert row["labelloop"]["control"] == "answer,note"


def test_vqa_pairs_can_be_one_row_each() -> None:
    ls = LabelStudioExport()
    built = rows_for(
        [ls.textarea("answer", "Two.", "Grey.")],
        {"question": ["How many cats?", "What colour is the mat?"]},
        options=RowOptions(vqa_mode="per_pair"),
    )
    assert [row["messages"] for row in only(built, "vqa")] == [
        [{"role": "user", "content": "<image>How many cats?"}, {"role": "assistant", "content": "Two."}],
        [{"role": "user", "content": "<image>What colour is the mat?"}, {"role": "assistant", "content": "Grey."}],
    ]


def test_one_question_with_several_text_entries_gets_them_joined() -> None:
    ls = LabelStudioExport()
    built = rows_for([ls.textarea("answer", "A cat.", "Also a dog.")], {"question": "What is there?"})
    assert only(built, "vqa")[0]["messages"][1]["content"] == "A cat.\nAlso a dog."


def test_grounding_boxes_are_pixels_of_the_written_image_with_objects() -> None:
    ls = LabelStudioExport()
    result = [
        ls.rectangle("objects", Box(1200, 100, 1600, 500), 2000, 1000, ["dog"]),
        ls.rectangle("objects", Box(200, 400, 600, 800), 2000, 1000, ["cat"]),
        ls.rectangle("objects", Box(100, 100, 300, 200), 2000, 1000, ["cat"]),
        ls.rectangle("objects", Box(0, 0, 100, 50), 2000, 1000, ["redact"]),
    ]
    built = rows_for(result)
    (row,) = only(built, "grounding")
    assert row["messages"] == [
        {"role": "user", "content": "<image>Find every object of these kinds in the image: cat, dog. Give each object's label and box."},
        {"role": "assistant", "content": "<ref-object><bbox>\n<ref-object><bbox>\n<ref-object><bbox>"},
    ]  # fmt: skip
    assert row["objects"] == {
        "ref": ["cat", "cat", "dog"],
        "bbox": [[50, 50, 150, 100], [100, 200, 300, 400], [600, 50, 800, 250]],
        "bbox_type": "real",
    }
    assert built.rows[0].boxes == (
        ("cat", (50, 50, 150, 100)),
        ("cat", (100, 200, 300, 400)),
        ("dog", (600, 50, 800, 250)),
    )


def test_rotated_clipped_and_outside_boxes() -> None:
    ls = LabelStudioExport()
    result = [
        ls.rectangle("objects", Box(200, 200, 600, 400), 2000, 1000, ["cat"], rotation=90),
        ls.rectangle("objects", Box(1800, 800, 2200, 1200), 2000, 1000, ["dog"]),
        ls.rectangle("objects", Box(2100, 100, 2300, 300), 2000, 1000, ["dog"]),
    ]
    built = rows_for(result)
    (row,) = only(built, "grounding")
    # rotated 90 degrees clockwise about (200, 200): x from 0 to 200, y from 200 to 600 -> halved
    assert row["objects"]["bbox"] == [[0, 100, 100, 300], [900, 400, 1000, 500]]
    assert built.stats["rotated_boxes"] == 1 and built.stats["clipped_boxes"] == 1
    assert [(n.code, n.message) for n in built.notes] == [
        ("box_outside", "task 1: annotations[0].result[2].value: box [2100, 100, 2300, 300] lies outside the 2000x1000 image; dropped"),
    ]  # fmt: skip


def test_redacted_regions_never_become_rows_and_are_handed_to_the_image_step() -> None:
    ls = LabelStudioExport()
    result = [ls.rectangle("objects", Box(0, 0, 100, 50), 2000, 1000, ["redact"])]
    built = rows_for(result)
    assert built.rows == [] and built.notes == []
    task = parse_task(ls.task({"image": "x"}, [ls.annotation(result)]))
    (rect,) = redaction_rects(task.annotations[0], CONFIG)
    assert rect.to_pixels(2000, 1000) == Box(0, 0, 100, 50)


def test_choices_ask_the_question_with_the_options() -> None:
    ls = LabelStudioExport()
    built = rows_for([ls.choice("weather", "rain"), ls.choice("tags", "text", "indoor")])
    weather, tags = only(built, "choices")
    assert weather["messages"] == [
        {"role": "user", "content": "<image>Which weather fits this image?\nOptions: sun, rain.\nAnswer with one of the options."},
        {"role": "assistant", "content": "rain"},
    ]  # fmt: skip
    assert tags["messages"] == [
        {"role": "user", "content": "<image>Which apply?\nOptions: indoor, people, text.\nAnswer with every option that applies, separated by commas."},
        {"role": "assistant", "content": "indoor, text"},
    ]  # fmt: skip
    assert [row.labels for row in built.rows] == [("rain",), ("indoor", "text")]


def test_the_review_choice_and_skipped_controls_are_not_rows() -> None:
    ls = LabelStudioExport()
    outline = {"from_name": "outline", "to_name": "image", "type": "polygon", "value": {"points": [[1, 2], [3, 4]]}}
    built = rows_for([ls.textarea("caption", "A cat."), ls.choice("review", "accept"), outline])
    assert [row.kind for row in built.rows] == ["caption"]
    assert built.stats["skipped_control_results"] == 1
    assert built.notes == []


@pytest.mark.parametrize(
    ("result", "data", "code", "message"),
    [
        (lambda ls: [ls.textarea("caption", " \u200b ")], {}, "empty_text", "task 1: annotations[0].result[0].value.text: empty caption"),
        (lambda ls: [ls.textarea("caption", "ok")], {}, "short_text", "task 1: annotations[0].result[0].value.text: caption 'ok' is shorter than 3 characters"),
        (lambda ls: [ls.textarea("answer", "")], {"question": "Why?"}, "empty_text", "task 1: annotations[0].result[0].value.text: empty answer"),
        (lambda ls: [ls.textarea("answer", "one", "two")], {"question": ["a?", "b?", "c?"]}, "answer_count", "task 1: annotations[0].result[0].value.text: 2 answers for 3 questions in data.question"),
        (lambda ls: [ls.textarea("answer", "one")], {}, "bad_question", "task 1: answer: data.question: missing (the label config reads the question from it)"),
        (lambda ls: [ls.textarea("colour", "red")], {}, "unknown_control", "task 1: annotations[0].result[0].from_name: 'colour' is not a control of the label config (controls: caption, answer, note, objects, weather, tags, review)"),
        (lambda ls: [ls.choice("caption", "sun")], {}, "wrong_type", "task 1: annotations[0].result[0].type: 'choices' does not fit TextArea 'caption'"),
        (lambda ls: [ls.choice("weather", "snow")], {}, "unknown_choice", "task 1: annotations[0].result[0].value.choices: 'snow' not among weather's choices (sun, rain)"),
        (lambda ls: [ls.rectangle("objects", Box(1, 1, 50, 50), 2000, 1000, ["horse"])], {}, "unknown_label", "task 1: annotations[0].result[0].value.rectanglelabels: 'horse' is not a label of objects (cat, dog, redact)"),
        (lambda ls: [ls.rectangle("objects", Box(10, 10, 10.4, 300), 2000, 1000, ["cat"])], {}, "box_degenerate", "task 1: annotations[0].result[0].value: box [10, 10, 10, 300] is empty once resized"),
    ],
)  # fmt: skip
def test_what_cannot_be_a_row_is_a_note_naming_task_and_field(
    result: Any, data: dict[str, Any], code: str, message: str
) -> None:
    built = rows_for(result(LabelStudioExport()), data)
    assert built.rows == []
    assert [(note.code, note.message) for note in built.notes] == [(code, message)]


def test_min_lengths_and_normalisation_are_options() -> None:
    ls = LabelStudioExport()
    built = rows_for([ls.textarea("caption", "ＯＫ")], options=RowOptions(min_caption_chars=1, normalize_text=False))
    assert only(built, "caption")[0]["messages"][1]["content"] == "ＯＫ"
    built = rows_for([ls.textarea("caption", "ＯＫ")], options=RowOptions(min_caption_chars=1))
    assert only(built, "caption")[0]["messages"][1]["content"] == "OK"


MARKED = parse_label_config(
    '<View><Image name="image" value="$image"/><TextArea name="description" toName="image"/>'
    '<RectangleLabels name="regions" toName="image"><Label value="marks"/><Label value="redact"/></RectangleLabels></View>'
)


def test_a_marked_screenshot_keeps_the_image_and_answers_with_the_description() -> None:
    ls = LabelStudioExport()
    built = rows_for([ls.textarea("description", "The red box marks the Save button.")], config=MARKED)
    (row,) = only(built, "marked")
    assert row["messages"] == [
        {"role": "user", "content": "<image>Describe what the marks drawn on this screenshot point out."},
        {"role": "assistant", "content": "The red box marks the Save button."},
    ]


def test_detected_marks_label_the_marks_when_nobody_drew_them() -> None:
    ls = LabelStudioExport()
    detected = (Box(10, 10, 110, 60), Box(900, 450, 1100, 600))
    built = rows_for([ls.textarea("description", "The Save button.")], config=MARKED, marks=detected)
    (row,) = only(built, "grounding")
    assert row["objects"] == {
        "ref": ["marks", "marks"],
        "bbox": [[10, 10, 110, 60], [900, 450, 1000, 500]],
        "bbox_type": "real",
    }
    assert built.stats["detected_marks"] == 2
    drawn = [
        ls.textarea("description", "The Save button."),
        ls.rectangle("regions", Box(0, 0, 200, 100), 2000, 1000, ["marks"]),
    ]
    built = rows_for(drawn, config=MARKED, marks=detected)
    assert only(built, "grounding")[0]["objects"]["bbox"] == [[0, 0, 100, 50]]  # a person's boxes win
