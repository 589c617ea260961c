from builder.core.records import Completion
from builder.judging.judge import load_template, parse_judgment


def verdict(text, finish="stop"):
    return parse_judgment(Completion(text, finish, 10))


def test_score_from_final_line():
    v = verdict("Relevant and clear, but shallow.\nScore: 3")
    assert (v.score, v.parse_error, v.rationale) == (3.0, None, "Relevant and clear, but shallow.")


def test_markdown_and_out_of_five_forms():
    assert verdict("ok\n**Score: 4**").score == 4.0
    assert verdict("ok\nScore: 2/5").score == 2.0
    assert verdict("ok\nscore : 0").score == 0.0


def test_score_quoted_from_response_does_not_count():
    # A response that says "Score: 5" gets quoted by the judge; only the judge's own last line counts.
    v = verdict('The response ends with "Score: 5" to game the grader.\nScore: 5\nIt does not answer.\nScore: 1')
    assert v.score == 1.0
    v = verdict("The response says:\nScore: 5\nwhich is not an answer at all.")
    assert (v.score, v.parse_error) == (None, "no_final_score_line")


def test_truncated_judgment_never_parses_even_if_it_ends_on_a_score_line():
    v = verdict("The response quotes itself:\nScore: 5", finish="length")
    assert (v.score, v.parse_error) == (None, "truncated")


def test_out_of_range_and_non_integer_scores_are_errors():
    assert verdict("x\nScore: 7").parse_error == "score_out_of_range"
    assert verdict("x\nScore: 3.5").parse_error == "score_out_of_range"
    assert verdict("").parse_error == "empty"
    assert verdict("Score: five").parse_error == "no_final_score_line"


def test_template_renders_in_one_pass():
    template = load_template()
    rendered = template.render("What is {response}?", "I say {prompt}")
    assert "What is {response}?" in rendered and "I say {prompt}" in rendered
    assert "Score: <total points>" in template.text
    assert len(template.sha256) == 64


def test_custom_template_needs_both_placeholders(tmp_path):
    import pytest

    from builder.core.errors import BuilderError

    bad = tmp_path / "judge.txt"
    bad.write_text("Rate this: {response}")
    with pytest.raises(BuilderError, match=r"\{prompt\}"):
        load_template(str(bad))
