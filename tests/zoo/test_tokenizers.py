import pytest

from gptzoo.zoo.tokenizers import CharTokenizer, GPT2Tokenizer, UnknownCharacters, from_spec


def test_char_round_trip_and_spec():
    tok = CharTokenizer.from_text("hello, world\n")
    ids = tok.encode("low, rod\n")
    assert tok.decode(ids) == "low, rod\n"
    assert tok.vocab_size == len(set("hello, world\n"))
    again = from_spec(tok.spec())
    assert again.encode("hold") == tok.encode("hold")


def test_char_unknown_characters_are_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(UnknownCharacters) as e:
        tok.encode("abzxz")
    assert e.value.chars == ["x", "z"]
    assert "'x'" in str(e.value) and "'z'" in str(e.value)


def test_gpt2_round_trip_from_local_ranks():
    tok = GPT2Tokenizer()
    text = "ROMEO: But soft, what light through yonder window breaks? ünïcödé ✓"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.vocab_size == 50257
    assert tok.encode("Hello world") == [15496, 995]  # GPT-2's well-known ids
    assert isinstance(from_spec(tok.spec()), GPT2Tokenizer)


def test_unknown_tokenizer_kind():
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        from_spec({"kind": "sentencepiece"})
