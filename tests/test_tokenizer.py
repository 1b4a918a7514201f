import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_core.tokenizer import SentencePieceTokenizer, Tokenizer


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text())
def test_roundtrip_is_lossless_on_arbitrary_unicode(sp_tokenizer, text):
    assert sp_tokenizer.decode(sp_tokenizer.encode(text)) == text


def test_roundtrip_of_hard_cases(sp_tokenizer):
    for text in ["\u2581", "a\u2581b \u2581\u2581", "  two  spaces\n\n\ttab", "\x00\r\n", "🙂漢字", ""]:
        assert sp_tokenizer.decode(sp_tokenizer.encode(text)) == text


def test_digits_are_single_pieces(sp_tokenizer):
    ids = sp_tokenizer.encode("In 1599 and 2024")
    pieces = [sp_tokenizer.sp.id_to_piece(i) for i in ids]
    digit_pieces = [p for p in pieces if any(c in string.digits for c in p)]
    assert digit_pieces == list("15992024")


def test_unseen_characters_fall_back_to_bytes(sp_tokenizer):
    ids = sp_tokenizer.encode("\u16a0")  # a runic letter: not in Shakespeare
    assert [sp_tokenizer.sp.id_to_piece(i) for i in ids] == ["<0xE1>", "<0x9A>", "<0xA0>"]
    assert sp_tokenizer.sp.unk_id() not in ids


def test_special_ids_follow_meta_and_protocol_holds(sp_tokenizer, tmp_path):
    assert isinstance(sp_tokenizer, Tokenizer)
    assert (sp_tokenizer.bos_id, sp_tokenizer.eos_id, sp_tokenizer.vocab_size) == (1, 2, 512)
    ids = sp_tokenizer.encode("To be", bos=True, eos=True)
    assert ids[0] == 1 and ids[-1] == 2
    path = tmp_path / "tokenizer.model"
    sp_tokenizer.save(path)
    loaded = SentencePieceTokenizer.load(path)
    assert loaded.fingerprint == sp_tokenizer.fingerprint
    assert loaded.encode("To be, or not to be") == sp_tokenizer.encode("To be, or not to be")
