"""kernel.sealing: what is sealed opens only with the same secret, purpose and binding, unaltered."""

from __future__ import annotations

from kernel.sealing import NONCE_BYTES, seal, unseal


def test_a_sealed_text_opens_with_what_sealed_it_and_hides_the_text() -> None:
    sealed = seal("secret", "purpose", "enc_live_abc", bound_to="key:1")
    assert b"enc_live_abc" not in sealed
    assert unseal("secret", "purpose", sealed, bound_to="key:1") == "enc_live_abc"
    assert seal("secret", "purpose", "enc_live_abc", bound_to="key:1") != sealed  # a fresh nonce each time


def test_another_secret_purpose_binding_or_an_altered_byte_opens_nothing() -> None:
    sealed = seal("secret", "purpose", "enc_live_abc", bound_to="key:1")
    assert unseal("other", "purpose", sealed, bound_to="key:1") is None
    assert unseal("secret", "other", sealed, bound_to="key:1") is None
    assert unseal("secret", "purpose", sealed, bound_to="key:2") is None
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert unseal("secret", "purpose", altered, bound_to="key:1") is None
    assert unseal("secret", "purpose", sealed[:NONCE_BYTES]) is None
