from detectors.text import normalise, shingles, text_key, truncate_words


def test_normalise_folds_case_spacing_edge_punctuation_and_numbers():
    assert normalise("Vote on Nov 5!") == normalise("  vote ON\tnov 6 ")
    assert normalise("Vote on Nov 5!") == "vote on nov 0"
    assert normalise("Call 555-1234 (now)...") == "call 0-0 now"


def test_normalise_keeps_inner_punctuation_and_distinct_words():
    assert normalise("Don't e-mail me") == "don't e-mail me"
    assert normalise("vote yes") != normalise("vote no")


def test_normalise_folds_unicode_compatibility_forms():
    assert normalise("\uff36\uff2f\uff34\uff25 \uff11\uff12")  # full-width "VOTE 12" == "vote 0"


def test_normalise_of_punctuation_only_is_empty():
    assert normalise("!!! ... ???") == ""


def test_truncate_words_keeps_the_start():
    text = " ".join(f"w{i}" for i in range(100))
    truncated = truncate_words(text, max_words=64)
    assert truncated.split() == [f"w{i}" for i in range(64)]
    assert truncate_words("a b  c", max_words=64) == "a b c"


def test_word_shingles_for_long_texts():
    text = "one two three four five six seven"
    result = shingles(text, k=3)
    assert "one two three" in result and "five six seven" in result
    assert len(result) == len(text.split()) - 2


def test_short_texts_fall_back_to_character_grams():
    result = shingles("vote now", k=3)
    assert "vote " in result and "e now" in result
    assert all(len(gram) == 5 for gram in result)
    assert shingles("hi", k=3) == {"hi"}
    assert shingles("", k=3) == set()


def test_text_key_is_stable_and_distinguishes_texts():
    assert text_key("vote on nov 0") == text_key("vote on nov 0")
    assert text_key("vote on nov 0") != text_key("vote on dec 0")
    assert len(text_key("x")) == 32 and int(text_key("x"), 16) >= 0
