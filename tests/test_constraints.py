import json
import random
import time

import pytest

from builder.judging.constraints import (
    END_PHRASES,
    FORBIDDEN_POOL,
    FREQUENT_POOL,
    INCLUDE_POOL,
    KINDS,
    START_PHRASES,
    CheckResult,
    Constraint,
    check,
    check_all,
    from_json,
    paragraphs,
    sample,
    sentences,
    to_json,
    words,
)

TASK = "Explain why bread goes stale, in two short paragraphs."
TEN_WORDS = "one two three four five six seven eight nine ten"

# (kind, params, response, passes): hand-written examples, at least one passing and one failing for every kind.
EXAMPLES = [
    ("min_words", {"n": 10}, TEN_WORDS, True),
    ("min_words", {"n": 10}, "one two three four five six seven eight nine", False),
    ("min_words", {"n": 4}, "don't well-known state-of-the-art", False),  # inner ' and - join a word
    ("min_words", {"n": 1}, "", False),
    ("max_words", {"n": 10}, TEN_WORDS, True),
    ("max_words", {"n": 10}, TEN_WORDS + " eleven", False),
    ("max_words", {"n": 2}, "--- !!! ... hello", True),  # punctuation is not a word
    ("words_between", {"low": 3, "high": 5}, "one two three", True),
    ("words_between", {"low": 3, "high": 5}, "one two three four five", True),
    ("words_between", {"low": 3, "high": 5}, "one two", False),
    ("words_between", {"low": 3, "high": 5}, "one two three four five six", False),
    ("max_characters", {"n": 10}, "  123456789  \n", True),  # surrounding whitespace is not counted
    ("max_characters", {"n": 10}, "1234567890", False),
    ("max_characters", {"n": 5}, "ééééé", False),
    ("min_sentences", {"n": 3}, "One. Two! Three?", True),
    ("min_sentences", {"n": 3}, "Pi is 3.14 and e is 2.72. That is all.", False),  # no break inside a number
    ("min_sentences", {"n": 3}, "Intro line\n- item one\n- item two", True),  # a line break ends a sentence
    ("min_sentences", {"n": 2}, "Only one sentence... ", False),
    ("min_sentences", {"n": 2}, "He said \"stop.\" Then he left.", True),
    ("max_sentences", {"n": 2}, "One. Two.", True),
    ("max_sentences", {"n": 2}, "One. Two. Three.", False),
    ("max_sentences", {"n": 1}, "...!!! ??? \n\n Hello", True),  # pieces without letters or digits do not count
    ("max_sentence_words", {"n": 4}, "Short one here. Also short.", True),
    ("max_sentence_words", {"n": 4}, "This sentence has far too many words. Short.", False),
    ("max_sentence_words", {"n": 3}, "", True),
    ("paragraph_count", {"n": 2}, "First paragraph.\n\nSecond paragraph.", True),
    ("paragraph_count", {"n": 2}, "First.\n \t \nSecond.\n\n\n", True),  # a line of spaces is blank
    ("paragraph_count", {"n": 2}, "First.\nStill the first.", False),
    ("paragraph_count", {"n": 1}, "\n\nOnly one.\n\n", True),
    ("paragraph_count", {"n": 3}, "A\n\nB", False),
    ("bullet_count", {"n": 3}, "Intro:\n- one\n* two\n  - three", True),
    ("bullet_count", {"n": 3}, "- one\n- two", False),
    ("bullet_count", {"n": 2}, "- one\n---\n* * *\n-not a bullet\n**bold**\n- two", True),
    ("bullet_count", {"n": 1}, "1. numbered", False),
    ("numbered_items", {"n": 3}, "1. one\n2. two\n3) three", True),
    ("numbered_items", {"n": 3}, "1. one\n2. two", False),
    ("numbered_items", {"n": 1}, "In 2024. we met\n1. item\n1.5 is a number", True),  # only "1. item" is an item
    ("numbered_items", {"n": 1}, "10. tenth", True),
    ("section_count", {"marker": "SECTION", "n": 2}, "SECTION 1\nIntro.\n\n## SECTION 2\nMore.", True),
    ("section_count", {"marker": "SECTION", "n": 2}, "SECTION 1\nIntro.\nSection 2\nMore.", False),  # case
    ("section_count", {"marker": "Part", "n": 1}, "Part 1: the start", True),
    ("section_count", {"marker": "Part", "n": 1}, "Part one\nPart 1a", False),
    ("markdown_headings", {"n": 2}, "# Title\ntext\n## Sub\nmore", True),
    ("markdown_headings", {"n": 2}, "# Title\n#hashtag\n    # code\n####### seven", False),
    ("markdown_headings", {"n": 1}, "no headings here", False),
    ("json_format", {}, '{"answer": "yes", "items": [1, 2]}', True),
    ("json_format", {}, '```json\n[{"a": 1}]\n```', True),
    ("json_format", {}, '  ```\n{"a": 1}\n```  ', True),
    ("json_format", {}, 'Here it is: {"a": 1}', False),
    ("json_format", {}, '"just a string"', False),
    ("json_format", {}, "{'single': 'quotes'}", False),
    ("json_format", {}, "", False),
    ("title", {}, "<<A Day at Sea>>\nThe boat left early.", True),
    ("title", {}, "The boat <<left>> early.", True),
    ("title", {}, "<< >> and <<\n>> and <title>", False),
    ("title", {}, "No title here.", False),
    ("quoted", {}, '  "The whole answer is quoted."\n', True),
    ("quoted", {}, "“Curly quotes count too.”", True),
    ("quoted", {}, '"Starts quoted but not closed.', False),
    ("quoted", {}, '""', False),
    ("quoted", {}, '"', False),
    ("postscript", {"marker": "P.S."}, "Body of the letter.\n\nP.S. Bring snacks.", True),
    ("postscript", {"marker": "P.S."}, "Body.\nP.P.S. Only a second postscript.", False),
    ("postscript", {"marker": "P.S."}, "P.S. Nothing comes before this.", False),
    ("postscript", {"marker": "P.S."}, "Body.\nP.S.", False),  # a postscript needs text
    ("postscript", {"marker": "P.P.S."}, "Body.\nP.S. first\nP.P.S. second", True),
    ("two_responses", {}, "First answer.\n******\nSecond answer.", True),
    ("two_responses", {}, "First answer.\n*******\nSecond answer.", False),  # seven asterisks
    ("two_responses", {}, "Same.\n******\nSame.", False),
    ("two_responses", {}, "One.\n******\nTwo.\n******\nThree.", False),
    ("two_responses", {}, "Only one.\n******\n", False),
    ("include_keywords", {"keywords": ["plan", "Future"]}, "A PLAN for the future.", True),
    ("include_keywords", {"keywords": ["plan", "future"]}, "Planning for the futures.", False),
    ("include_keywords", {"keywords": ["step"]}, "Step by step.", True),
    ("forbidden_words", {"forbidden": ["just", "very"]}, "Justice is served, everyone.", True),
    ("forbidden_words", {"forbidden": ["just", "very"]}, "It is VERY good.", False),
    ("forbidden_words", {"forbidden": ["like"]}, "I like-minded", False),  # a hyphen separates words here
    ("keyword_frequency", {"word": "idea", "n": 2}, "One idea, another Idea.", True),
    ("keyword_frequency", {"word": "idea", "n": 2}, "One idea, many ideas.", False),
    ("letter_frequency", {"letter": "B", "n": 4}, "Big bubble", True),
    ("letter_frequency", {"letter": "b", "n": 5}, "Big bubble", False),
    ("all_lowercase", {}, "all lowercase, with numbers 42 and émigré.", True),
    ("all_lowercase", {}, "Not all lowercase.", False),
    ("all_lowercase", {}, "123 !!!", False),  # needs at least one letter
    ("all_uppercase", {}, "ALL CAPITALS, 42 TIMES. P.S. YES!", True),
    ("all_uppercase", {}, "ALL CAPITALS except this", False),
    ("all_uppercase", {}, "", False),
    ("max_capital_words", {"n": 1}, "I think NASA and P.S. notes are fine.", True),  # "I" and "P.S." do not count
    ("max_capital_words", {"n": 1}, "NASA and ESA are agencies.", False),
    ("max_capital_words", {"n": 0}, "Nothing shouted here.", True),
    ("min_capital_words", {"n": 2}, "This is VERY, VERY important.", True),
    ("min_capital_words", {"n": 2}, "This is Very important, I think.", False),
    ("min_capital_words", {"n": 1}, "COVID-19 changed things.", True),
    ("starts_with", {"phrase": "Let me explain."}, "\n  Let me explain. Bread dries out.", True),
    ("starts_with", {"phrase": "Let me explain."}, "let me explain. Bread dries out.", False),
    ("starts_with", {"phrase": "Let me explain."}, "So, let me explain.", False),
    ("ends_with", {"phrase": "I hope this helps."}, "Bread dries out. I hope this helps.  \n", True),
    ("ends_with", {"phrase": "I hope this helps."}, "I hope this helps. Bye.", False),
    ("ends_with", {"phrase": "I hope this helps."}, "helps.", False),
    ("repeat_request", {"request": TASK}, TASK + "\n\nBread loses water...", True),
    ("repeat_request", {"request": TASK}, "explain why bread goes  stale,\nin two short paragraphs. Because...", True),
    ("repeat_request", {"request": TASK}, "Bread goes stale because it loses water.", False),
    ("repeat_request", {"request": "Explain tides."}, "Explain tide", False),
    ("end_punctuation", {"mark": "?"}, "Do you agree?  ", True),
    ("end_punctuation", {"mark": "?"}, "Do you agree? I do.", False),
    ("end_punctuation", {"mark": "!"}, "What a day!", True),
    ("end_punctuation", {"mark": "!"}, "", False),
    ("no_commas", {}, "No commas here at all.", True),
    ("no_commas", {}, "Well, one comma.", False),
    ("no_commas", {}, "中文，逗号", False),
    ("no_digits", {}, "Three cats and twelve dogs.", True),
    ("no_digits", {}, "3 cats.", False),
    ("no_digits", {}, "Arabic-Indic ٣ digit.", False),
    ("min_placeholders", {"n": 2}, "Dear [name], see you on [date].", True),
    ("min_placeholders", {"n": 2}, "Dear [name], see you soon. [ ] []", False),
    ("min_placeholders", {"n": 1}, "A [[nested]] bracket.", True),
    ("min_highlights", {"n": 2}, "This is *key* and **vital**.", True),
    ("min_highlights", {"n": 2}, "* bullet item\n* another *one*", False),
    ("min_highlights", {"n": 1}, "Not * a highlight * here, nor 2*3*4.", True),  # *3* counts: digits are text
    ("min_highlights", {"n": 1}, "Not * a highlight * here.", False),
    ("min_question_marks", {"n": 2}, "Why? Why not？", True),
    ("min_question_marks", {"n": 2}, "Why? Because.", False),
]


@pytest.mark.parametrize(("kind", "params", "response", "passes"), EXAMPLES,
                         ids=[f"{e[0]}-{i}-{'pass' if e[3] else 'fail'}" for i, e in enumerate(EXAMPLES)])
def test_example(kind, params, response, passes):
    result = check(Constraint(kind, params), response)
    assert result.passed is passes, result.detail
    assert result.kind == kind and result.detail


def test_every_kind_has_a_passing_and_a_failing_example():
    covered = {(kind, passes) for kind, _, _, passes in EXAMPLES}
    assert {kind for kind, passes in covered if passes} == set(KINDS)
    assert {kind for kind, passes in covered if not passes} == set(KINDS)


def test_there_are_at_least_24_kinds():
    assert len(KINDS) >= 24 and len(set(KINDS)) == len(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_describe_gives_a_sentence_for_sampled_params(kind):
    rng = random.Random(kind)
    for _ in range(30):
        constraint = sample(kind, rng, TASK)
        sentence = constraint.describe()
        assert sentence.strip() and sentence[0].isupper() and sentence.rstrip()[-1] in ".!?:\"'" and "{" not in sentence
        json.dumps(constraint.params)  # parameters are JSON-serialisable


def _random_text(rng: random.Random, length: int) -> str:
    alphabet = "aZ 09.,!?*-#<>[]\"'“”\n\t\r，？。…é中😀_()`{}:P.S"
    return "".join(rng.choice(alphabet) for _ in range(length))


@pytest.mark.parametrize("kind", KINDS)
def test_random_strings_never_raise(kind):
    rng = random.Random(f"never-raise-{kind}")
    texts = ["", " ", "\n\n", "\x00", "😀" * 50, "```json\n" + "[" * 5000 + "\n```", "9" * 5000]
    texts += [_random_text(rng, rng.randint(0, 400)) for _ in range(300)]
    for text in texts:
        result = check(sample(kind, rng, _random_text(rng, 40)), text)
        assert isinstance(result, CheckResult) and isinstance(result.passed, bool) and isinstance(result.detail, str)


PATHOLOGICAL = [".", "*", "*a", "-", " ", "\n", "\n \n", "<<", "<<a>", "[", "[a", "a", "a'", "a-", "#", "- ", "1. ",
                "SECTION ", "P.S.", "!?", ". ", "a.", '"', "{", "**a", "* a", "9"]


@pytest.mark.parametrize("kind", KINDS)
def test_huge_inputs_take_linear_time(kind):
    rng = random.Random(kind)
    constraint = sample(kind, rng, TASK)
    for unit in PATHOLOGICAL:
        text = unit * (100_000 // len(unit))
        for variant in (text, text + "x", "- " + text, "1." + text):
            start = time.perf_counter()
            check(constraint, variant)
            assert time.perf_counter() - start < 1.0, (kind, unit)


def test_check_all_keeps_order():
    constraints = [Constraint("no_commas", {}), Constraint("min_words", {"n": 2})]
    results = check_all(constraints, "one, two")
    assert [r.kind for r in results] == ["no_commas", "min_words"]
    assert [r.passed for r in results] == [False, True]


def test_json_round_trip():
    rng = random.Random(0)
    constraints = [sample(kind, rng, TASK) for kind in KINDS]
    text = to_json(constraints)
    assert from_json(text) == constraints
    assert to_json(from_json(text)) == text


def test_from_json_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="no_such_kind"):
        from_json('[{"kind": "no_such_kind", "params": {}}]')


def test_constraints_are_hashable_and_compare_by_value():
    assert Constraint("min_words", {"n": 5}) == Constraint("min_words", {"n": 5})
    assert Constraint("min_words", {"n": 5}) != Constraint("min_words", {"n": 6})
    assert len({Constraint("title", {}), Constraint("title", {})}) == 1


def test_shared_definitions():
    assert words("It's a well-known fact: 3.5 cm, café!") == ["It's", "a", "well-known", "fact", "3", "5", "cm", "café"]
    assert sentences("Hi there. How are you?\nFine") == ["Hi there.", "How are you?", "Fine"]
    assert paragraphs("a\nb\n\n\nc\n   \nd") == ["a\nb", "c", "d"]


def test_word_pools_do_not_contradict_fixed_phrases():
    """A forbidden word never appears in a fixed opening or ending, nor among the words to include."""
    phrase_words = {w.casefold() for phrase in START_PHRASES + END_PHRASES for w in words(phrase)}
    assert not set(FORBIDDEN_POOL) & (phrase_words | set(INCLUDE_POOL) | set(FREQUENT_POOL))


@pytest.mark.parametrize("phrase", START_PHRASES + END_PHRASES)
def test_fixed_phrases_pass_the_character_rules(phrase):
    """Openings and endings hold no comma, digit or all-capital word, so they combine with those kinds."""
    for kind in ("no_commas", "no_digits"):
        assert check(Constraint(kind, {}), phrase).passed
    assert check(Constraint("max_capital_words", {"n": 0}), phrase).passed
