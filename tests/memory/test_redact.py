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


# One realistic fake per rule: (text, the secret that must go, what must stay). The plugin
# column names the detect-secrets plugin whose regex covers it ("ours" for our own rules).
HEX64 = "0123456789abcdef" * 4
FAKES = [
    ("ours", "[Bash: export OPENAI_API_KEY=sk-proj-Q3vLx9TmZ0aB7cD2eF4gH6iJ8kL]",
     "sk-proj-Q3vLx9TmZ0aB7cD2eF4gH6iJ8kL", "[Bash: export OPENAI_API_KEY="),
    ("StripeDetector", "stripe key sk_live_4eC39HqLyjWDarjtT1zdp7dc here",
     "4eC39HqLyjWDarjtT1zdp7dc", "here"),
    ("ours", "restricted rk_live_51HxYzAbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefGHIJ ok",
     "51HxYzAbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefGHIJ", " ok"),
    ("ours", "test mode sk_test_51HxYzAbCdEfGhIjKlMnOpQr", "51HxYzAbCdEfGhIjKlMnOpQr", "test mode"),
    ("SlackDetector", "bot xoxb-2048-4096-AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGhIjKlMnOp", "bot"),
    ("ours", "app token xapp-1-A05ABCDEF12-6123456789012-0a1b2c3d4e5f67890a1b2c3d4e5f6789",
     "6123456789012-0a1b2c3d4e5f", "app token"),
    ("SlackDetector", "POST https://hooks.slack.com/services/T024BE7LD/B01ABCDEF12/"
     "Zx9yW8vU7tS6rQ5pO4nM3lK2", "Zx9yW8vU7tS6rQ5pO4nM3lK2", "POST"),
    ("BasicAuthDetector", "DATABASE_URL is postgres://app:s3cr3t-Passw0rd@db.internal:5432/app",
     "s3cr3t-Passw0rd", "@db.internal:5432/app"),
    ("ours", "DB_PASSWORD=correct-horse-battery", "correct-horse-battery", "DB_PASSWORD="),
    ("ours", "SECRET_KEY='django-insecure-q8#x!v2@k'", "django-insecure", "SECRET_KEY="),
    ("ours", "curl -H 'Authorization: Basic YWxpY2U6czNjcjN0UGFzcw=='",
     "YWxpY2U6czNjcjN0UGFzcw==", "Authorization: Basic "),
    ("ours", "the secret is wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY.",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "the secret is "),
    ("ours", "key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\n"
     "bm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE", "key:"),
    ("GitLabTokenDetector", "gitlab glpat-xYz12AbC34dEf56GhI78jK", "xYz12AbC34dEf56GhI78jK",
     "gitlab"),
    ("ours", "HF hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "AbCdEfGhIjKlMnOpQrStUvWxYz", "HF"),
    ("ours", "publish with npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "AbCdEfGhIjKlMnOpQrSt",
     "publish with"),
    ("NpmDetector", "//registry.npmjs.org/:_authToken=0123abcd-4567-89ef-0123-456789abcdef",
     "0123abcd-4567-89ef-0123-456789abcdef", "//registry.npmjs.org/"),
    ("GitHubTokenDetector", "gh ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "aBcDeFgHiJkLmNoPqRs",
     "gh"),
    ("AWSKeyDetector", "id AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "id"),
    ("AWSKeyDetector", "aws_token = \"wJalrXUtnFEMI+K7MDENG+bPxRfiCYEXAMPLEKEY\"",
     "wJalrXUtnFEMI+K7MDENG+bPxRfiCYEXAMPLEKEY", "aws_token"),
    ("OpenAIDetector", "legacy sk-AbCdEfGhIjKlMnOpQrStT3BlbkFJAbCdEfGhIjKlMnOpQrSt",
     "T3BlbkFJ", "legacy"),
    ("JwtTokenDetector", "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMTIz",
     "c2lnbmF0dXJlMTIz", "jwt"),
    ("PrivateKeyDetector", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7x\n"
     "-----END RSA PRIVATE KEY-----", "MIIEowIBAAKCAQEA7x", ""),
    ("PypiTokenDetector", "pypi-AgEIcHlwaS5vcmc" + "A1b2C3d4E5" * 8, "A1b2C3d4E5A1b2C3", ""),
    ("SendGridDetector", "SG.aBcDeFgHiJkLmNoPqRsTuV.aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789aBcDeFg",
     "aBcDeFgHiJkLmNoPqRsTuVwXyZ", ""),
    ("TwilioKeyDetector", "twilio SKabcdef0123456789abcdef0123456789", "abcdef0123456789",
     "twilio"),
    ("TwilioKeyDetector", "account ACabcdef0123456789abcdef0123456789", "abcdef0123456789",
     "account"),
    ("SquareOAuthDetector", "square sq0csp-" + "aBcDeFgHiJ" * 4 + "abc", "aBcDeFgHiJaBcDeFgHiJ",
     "square"),
    ("MailchimpDetector", "mc 0123456789abcdef0123456789abcdef-us12", "0123456789abcdef0123",
     "mc"),
    ("TelegramBotTokenDetector", "bot 1234567890:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0",
     "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0", "bot"),
    ("DiscordBotTokenDetector", "discord MTAxMjM0NTY3ODkwMTIzNDU2.GhIjKl.aBcDeFgHiJkLmNoPqRsTuVwXyZ0",
     "aBcDeFgHiJkLmNoPqRsTuVwXyZ0", "discord"),
    ("AzureStorageKeyDetector", "AccountKey=" + "aBcD0123+/" * 8 + "aBcD0123", "aBcD0123+/aBcD",
     ""),
    ("ArtifactoryDetector", "artifactory AKCp8" + "aBcDeFgHiJ" * 6, "aBcDeFgHiJaBcDeFgHiJ",
     "artifactory"),
    ("CloudantDetector", "https://admin:" + HEX64 + "@acct.cloudant.com", HEX64,
     "@acct.cloudant.com"),
    ("SoftlayerDetector", "https://api.softlayer.com/soap/v3/" + HEX64, HEX64,
     "api.softlayer.com"),
]


@pytest.mark.parametrize("plugin, text, secret, kept", FAKES,
                         ids=[f"{i}-{f[0]}" for i, f in enumerate(FAKES)])
def test_every_rule_redacts_a_realistic_fake_and_keeps_what_is_around_it(plugin, text, secret,
                                                                        kept):
    out = redact(text)
    assert secret not in out and REDACTED in out, out
    assert kept in out


def test_every_detect_secrets_regex_plugin_in_use_has_a_fake_here():
    """A detect-secrets upgrade that brings a plugin fails here until it has a fake above."""
    import detect_secrets.plugins as plugins
    import importlib
    import pkgutil

    from detect_secrets.plugins.base import RegexBasedDetector
    from memproxyd.memory.redact import LEFT_OUT
    shipped = {v.__name__ for m in pkgutil.iter_modules(plugins.__path__)
               for v in vars(importlib.import_module(f"{plugins.__name__}.{m.name}")).values()
               if isinstance(v, type) and issubclass(v, RegexBasedDetector)
               and v is not RegexBasedDetector}
    assert shipped - set(LEFT_OUT) <= {plugin for plugin, *_ in FAKES}


@pytest.mark.parametrize("text", [
    "git sha 0123456789abcdef0123456789abcdef01234567 is the fix",   # 40 hex: no AWS secret
    "uuid 123e4567-e89b-12d3-a456-426614174000 and max_tokens=4096, tokens=5",
    "API_KEY=$OPENAI_API_KEY and TOKEN=${TOKEN} and PASSWORD=<your password>",
    "servers 10.0.0.1 and 8.8.8.8, https://example.com/path?q=1",
    "ThisIsAVeryLongIdentifierNameWithoutDigitsInItAtAll",
    "a basic authorization scheme; a bearer of news; the password is long",
])
def test_what_is_not_a_secret_stays(text):
    assert redact(text) == text


def test_json_values_are_redacted_everywhere_and_keys_kept():
    from memproxyd.memory.redact import redact_value
    value = {"note": "key sk-ant-api03-AbCdEf0123456789_GhIj", "n": 1.5, "ok": True,
             "list": ["x", {"token": "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"}]}
    out = redact_value(value)
    assert out == {"note": f"key {REDACTED}", "n": 1.5, "ok": True,
                   "list": ["x", {"token": REDACTED}]}
