from streams.settings import Settings


def test_an_elasticsearch_url_is_printed_without_its_credentials():
    settings = Settings(elasticsearch_url="https://elastic:s3cret@es.example:9243/base")
    assert settings.elasticsearch_address == "https://es.example:9243/base"
    assert "s3cret" not in settings.elasticsearch_address
    assert Settings(elasticsearch_url="http://[::1]:9200").elasticsearch_address == \
        "http://[::1]:9200"
    assert Settings(elasticsearch_url="http://u:p@[::1]:9200").elasticsearch_address == \
        "http://[::1]:9200"


# Every format is checked when the settings are read, so a mistyped value stops the worker at
# start with one line naming the variable (issue 23: a malformed whsec_ secret passed the
# doctor, then crashed the worker at the first suspension, and again after every restart).

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from streams.settings import get_settings  # noqa: E402
from streams.tooling.doctor import settings_row  # noqa: E402
from streams.tooling.errors import one_line  # noqa: E402

SECRET = "whsec_not*base64!"


@pytest.fixture(autouse=True)
def no_env_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env of the checkout's
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(("name", "value", "parts"), [
    ("SUSPENSION_WEBHOOK_SECRETS", f'["whsec_b2xk", "{SECRET}"]',
     ["secret 2 of 2", "not valid base64", "whsec_ followed by base64"]),
    ("SUSPENSION_WEBHOOK_SECRETS", '["whsec_"]', ["secret 1 of 1", "empty"]),
    ("SUSPENSION_WEBHOOK_SECRETS", "whsec_b2xk", ["not valid JSON", "write it as JSON"]),
    ("SUSPENSION_WEBHOOK_URLS", '["ftp://user:pw@hooks.example/x?token=t0k#frag"]',
     ["http(s) URL with a host", "ftp://hooks.example/x"]),
    ("SUSPENSION_WEBHOOK_URLS", "https://hooks.example/x", ["not valid JSON"]),
    ("ELASTICSEARCH_URL", "es.example:9200", ["http(s) URL with a host"]),
    ("ELASTICSEARCH_URL", "http://es.example", ["'port'"]),
    ("PAGERDUTY_URL", "events.pagerduty.com/v2/enqueue", ["http(s) URL"]),
    ("ALERTMANAGER_URL", "http://am:ninety/", ["not a URL"]),
    ("KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2", ["'kafka-2' is not host:port"]),
    ("REVIEW_KEYS", '{"alice": ""}', ["empty analyst name or key", "'alice'"]),
    ("KAFKA_SECURITY_PROTOCOL", "SASL_TLS", ["'SASL_SSL'"]),
    ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-1", ["'SCRAM-SHA-512'"]),
    ("KAFKA_SSL_CAFILE", "/nonexistent/ca.crt", ["no such file"]),
    ("REVIEW_KEYS", "alice=key", ["not valid JSON"]),
    ("ALIGN_IDLE_SECONDS", "-1", ["greater than or equal to 0"]),
])
def test_a_malformed_setting_is_one_line_naming_the_variable_and_the_fix(
        monkeypatch, name: str, value: str, parts: list[str]) -> None:
    monkeypatch.setenv(f"MISUSE_{name}", value)
    with pytest.raises(ValueError) as refused:
        Settings()
    line = one_line(refused.value, Settings.model_construct())
    assert line is not None and "\n" not in line
    assert line.startswith(f"invalid setting MISUSE_{name}")
    for part in parts:
        assert part in line
    # Never a secret, nor a URL's password or query
    assert SECRET not in line and "pw" not in line and "t0k" not in line
    # The doctor shows the same line, as a failing row, and checks nothing else.
    settings, row = settings_row()
    assert settings is None and not row.ok and row.name == "settings"
    assert f"MISUSE_{name}" in row.detail and row.fix


def test_well_formed_values_are_accepted(monkeypatch) -> None:
    monkeypatch.setenv("MISUSE_SUSPENSION_WEBHOOK_SECRETS",
                       '["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "a plain shared secret"]')
    monkeypatch.setenv("MISUSE_SUSPENSION_WEBHOOK_URLS", '["https://a.example/hook"]')
    monkeypatch.setenv("MISUSE_ELASTICSEARCH_URL", "https://u:p@es.example/base")
    monkeypatch.setenv("MISUSE_ALERTMANAGER_URL", "http://[::1]:9093/api/v2/alerts")
    monkeypatch.setenv("MISUSE_KAFKA_BOOTSTRAP", "kafka-1:9092, kafka-2:9093")
    monkeypatch.setenv("MISUSE_REVIEW_KEYS", '{"alice": "k1"}')
    assert len(Settings().suspension_webhook_secrets) == 2
    settings, row = settings_row()
    assert settings is not None and row.ok


def test_the_worker_refuses_to_start_with_a_malformed_secret() -> None:
    from streams.cli import main

    result = CliRunner().invoke(main, ["worker"], env={
        "MISUSE_SUSPENSION_WEBHOOK_SECRETS": f'["{SECRET}"]'})
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("error: invalid setting MISUSE_SUSPENSION_WEBHOOK_SECRETS")
    assert "not valid base64" in line and SECRET not in line


def test_the_doctor_reports_a_malformed_secret_as_its_settings_row() -> None:
    from streams.cli import main

    result = CliRunner().invoke(main, ["doctor"], env={
        "MISUSE_SUSPENSION_WEBHOOK_URLS": "https://not-a-json-list.example"})
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith("FAIL  settings  invalid setting "
                                                    "MISUSE_SUSPENSION_WEBHOOK_URLS")
    assert "fix: write it as JSON" in result.output


@pytest.mark.parametrize(("variables", "parts"), [
    ({"SECURITY_PROTOCOL": "SASL_SSL", "USERNAME": "misuse-worker"},
     ["MISUSE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs", "MISUSE_KAFKA_PASSWORD"]),
    ({"SASL_MECHANISM": "SCRAM-SHA-512", "USERNAME": "misuse-worker", "PASSWORD": "pw"},
     ["MISUSE_KAFKA_SASL_MECHANISM=SCRAM-SHA-512 needs", "SASL_SSL"]),
])
def test_kafka_security_settings_that_do_not_fit_together_are_one_line(
        monkeypatch, variables: dict[str, str], parts: list[str]) -> None:
    """A mechanism without a SASL protocol would connect without the credentials given."""
    for name, value in variables.items():
        monkeypatch.setenv(f"MISUSE_KAFKA_{name}", value)
    with pytest.raises(ValueError) as refused:
        Settings()
    line = one_line(refused.value, Settings.model_construct())
    assert line is not None and line.startswith("invalid setting MISUSE_KAFKA_")
    for part in parts:
        assert part in line
    assert "pw" not in line
