"""Word -> sub-token label alignment: the label on a word's first piece, -100 elsewhere."""

from transformers import AutoTokenizer

from peftlab.tasks.token_classification import IGNORED, align_labels, label_set


def test_first_subtoken_gets_the_label_and_the_rest_are_ignored():
    # [CLS] play ##ing paris play ##s [SEP]
    word_ids = [None, 0, 0, 1, 2, 2, None]
    assert align_labels(word_ids, [5, 3, 7]) == [IGNORED, 5, IGNORED, 3, 7, IGNORED, IGNORED]


def test_every_word_labelled_once_when_no_word_splits():
    assert align_labels([None, 0, 1, 2, None], [1, 0, 2]) == [IGNORED, 1, 0, 2, IGNORED]


def test_padding_and_special_tokens_are_ignored():
    assert align_labels([None, None, None], []) == [IGNORED] * 3


def test_truncated_words_drop_out_without_shifting_the_rest():
    # the tokenizer cut the sentence after word 1: word 2's label must not appear anywhere
    assert align_labels([None, 0, 1, 1, None], [4, 6, 8]) == [IGNORED, 4, 6, IGNORED, IGNORED]


def test_alignment_with_a_real_fast_tokenizer(tiny_backbone):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    words = ["playing", "in", "paris"]
    encoded = tokenizer(words, is_split_into_words=True)
    assert encoded.tokens() == ["[CLS]", "play", "##ing", "in", "paris", "[SEP]"]
    labels = align_labels(encoded.word_ids(), [0, 0, 2])
    assert labels == [IGNORED, 0, IGNORED, 0, 2, IGNORED]
    assert sum(label != IGNORED for label in labels) == len(words)


def test_label_set_orders_o_first_then_b_before_i_per_type():
    train = [{"tags": ["I-PER", "B-PER", "O", "B-LOC"]}, {"tags": ["I-LOC", "B-MISC"]}]
    assert label_set(train) == ["O", "B-LOC", "I-LOC", "B-MISC", "B-PER", "I-PER"]
