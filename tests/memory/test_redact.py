import pytest

from memproxyd.memory.redact import REDACTED, redact

SECRETS = {
    "openai": "sk-proj-AbCdEf0123456789GhIjKlMnOp",
    "openai_legacy": "sk-0123456789abcdefABCDEF0123456789",
    "anthropic": "sk-ant-api03-AbCdEf0123456789_GhIj-KlMnOpQr",
    "github_classic": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "github_oauth": "gho_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6",
    "github_fine_grained": "github_pat_11ABCDEFG0123456789_abcdefghijKLMNOPQRSTuvwxyz",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "slack": "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp",
    "google": "AIzaSyA-1234567890abcdefghijklmnopqrstu",
}


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_each_key_format_is_redacted_and_the_text_around_it_kept(name):
    secret = SECRETS[name]
    out = redact(f"my key is {secret}, keep it safe")
    assert secret not in out
    assert out == f"my key is {REDACTED}, keep it safe"


def test_bearer_token_in_an_authorization_header_is_redacted():
    out = redact("curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc-_def'")
    assert "eyJ" not in out
    assert out == f"curl -H 'Authorization: {REDACTED}'"


def test_private_key_block_is_redacted_whole_across_lines():
    block = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7x\nabcDEF+/==\n"
             "-----END RSA PRIVATE KEY-----")
    out = redact(f"here:\n{block}\ndone")
    assert out == f"here:\n{REDACTED}\ndone"


def test_openssh_private_key_block_is_redacted():
    block = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----"
    assert redact(block) == REDACTED


def test_several_secrets_in_one_text_are_all_redacted():
    text = f"{SECRETS['aws']} and {SECRETS['slack']} and {SECRETS['anthropic']}"
    assert redact(text) == f"{REDACTED} and {REDACTED} and {REDACTED}"


@pytest.mark.parametrize("text", [
    "the sk-learn library and task-based skills",
    "a bearer of good news",
    "public key: -----BEGIN PUBLIC KEY----- abc -----END PUBLIC KEY-----",
    "AKIA is a prefix",
    "",
])
def test_ordinary_text_is_left_alone(text):
    assert redact(text) == text


def test_a_jwt_is_redacted_signed_or_not():
    signed = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
              "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")
    unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0In0."
    assert redact(f"cookie session={signed}; path=/") == f"cookie session={REDACTED}; path=/"
    assert redact(f"token {unsigned} here") == f"token {REDACTED} here"


@pytest.mark.parametrize("template", [
    "aws_secret_access_key = {}",
    "AWS_SECRET_ACCESS_KEY={}",
    'export AWS_SECRET_ACCESS_KEY="{}"',
    '{{"aws_secret_access_key": "{}"}}',
])
def test_a_labelled_aws_secret_access_key_is_redacted_and_its_label_kept(template):
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    out = redact(template.format(secret))
    assert secret not in out
    assert out == template.format(REDACTED)


def test_an_x_api_key_header_value_is_redacted_and_a_placeholder_kept():
    out = redact("curl -H 'x-api-key: 0123456789abcdefXYZ' -H \"X-Api-Key: a1b2c3d4e5f6g7h8\"")
    assert out == f"curl -H 'x-api-key: {REDACTED}' -H \"X-Api-Key: {REDACTED}\""
    assert redact("x-api-key: $ANTHROPIC_API_KEY") == "x-api-key: $ANTHROPIC_API_KEY"
    assert redact("the x-api-key header carries the key") == \
        "the x-api-key header carries the key"


def test_the_quick_check_never_skips_what_the_patterns_find():
    """``redact`` skips the regex for a text without any marker: each pattern's match must
    hold one. Checked on every match of every pattern over texts built to match them."""
    import random

    from memproxyd.memory import redact as module
    rng = random.Random(5)
    alphabet = "abcxyzAKIASIAghpousr_-.eyJ0123456789+/= :'\n\"BEGINENDPRIVATEKEYxox"
    samples = [
        "sk-ant-api03-" + "a" * 20, "sk-" + "Z" * 16, "ghp_" + "a" * 20, "github_pat_" + "b" * 22,
        "AKIA" + "A" * 16, "xoxb-" + "1" * 10, "AIza" + "x" * 35, "BeArEr " + "t" * 16,
        "eyJ" + "a" * 8 + ".eyJ" + "b" * 8 + ".", "AWS_Secret_Access_Key = " + "k" * 16,
        "X-Api-Key: " + "v" * 8, "aws_\u017fecret_access_\u212aey=" + "k" * 16,
        "-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----"]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
                for _ in range(3000)]
    for text in samples:
        assert module.redact(text) == module._SECRET.sub(module._replace, text), text
    assert all(module.redact(s) != s for s in samples[:13])
