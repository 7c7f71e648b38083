"""What every command shares: skopeo's registry flags, error reporting, exit codes, asyncio."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from mirrord.errors import ConfigError, InvalidReference, MirrordError, NotFound, SchemaTooNew
from mirrord.model import Platform
from mirrord.redact import redact_text
from mirrord.registry.options import Credentials, RegistryOptions, TLSMode
from mirrord.secret import Secret

# Exit codes (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed (network, registry, integrity, ...)
EXIT_USAGE = 2  # bad arguments or configuration: nothing was attempted
EXIT_PARTIAL = 3  # a sync finished but some jobs failed
EXIT_NOT_FOUND = 4  # the image, tag or repository does not exist
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GlobalFlags:
    debug: bool = False
    command_timeout: float | None = None
    override_os: str | None = None
    override_arch: str | None = None
    override_variant: str | None = None

    def system_platform(self) -> Platform:
        return Platform.host(self.override_os, self.override_arch, self.override_variant)


def global_flags() -> GlobalFlags:
    ctx = click.get_current_context()
    obj = ctx.find_root().obj
    return obj if isinstance(obj, GlobalFlags) else GlobalFlags()


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"mirrord: error: {redact_text(message)}", err=True)
    sys.exit(code)


def exit_code_for(error: BaseException) -> int:
    if isinstance(error, ConfigError | InvalidReference | SchemaTooNew):
        return EXIT_USAGE  # fix the setup; systemd does not restart on it
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    return EXIT_FAILED


def report(error: MirrordError) -> NoReturn:
    """Print a mirrord error as one line (one per problem for a ConfigError) and exit."""
    if global_flags().debug:
        logging.getLogger("mirrord").error("failed", exc_info=error)
    for problem in error.problems if isinstance(error, ConfigError) else (str(error),):
        click.echo(f"mirrord: error: {redact_text(problem)}", err=True)
    sys.exit(exit_code_for(error))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine with the global timeout; turn errors into one-line messages."""
    flags = global_flags()

    async def bounded() -> T:
        async with asyncio.timeout(flags.command_timeout):
            return await coro

    try:
        return asyncio.run(bounded())
    except MirrordError as exc:
        report(exc)
    except TimeoutError:
        fail(f"command timed out after {flags.command_timeout}s")
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except OSError as exc:  # a local file or directory the command could not use
        if flags.debug:
            logging.getLogger("mirrord").error("failed", exc_info=exc)
        fail(os_error_message(exc))


def os_error_message(error: OSError) -> str:
    """`PATH: reason`, as the shell says it (no traceback for a full disk or a bad path)."""
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename else reason


_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_duration(text: str) -> float:
    """`90s`, `1m30s`, `500ms`, `2h` (Go durations, as in the config) -> seconds.

    A bare number is seconds, as mirrord has always accepted it.
    """
    from pydantic_core import PydanticCustomError  # pydantic only when a duration is given

    from mirrord.config.fields import parse_duration as config_duration

    text = text.strip()
    if _SECONDS.fullmatch(text):
        return float(text)
    try:
        return config_duration(text).total_seconds()
    except PydanticCustomError as exc:
        raise click.BadParameter(exc.message()) from None


class DurationType(click.ParamType[float]):
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        return value if isinstance(value, float) else parse_duration(str(value))


class BoolValueOption(click.Option):
    """A boolean as Go's pflag parses it: `--flag` alone is true, `--flag=BOOL` sets it.

    The value is never taken from the next argument (`--tls-verify docker://...` must leave
    the image alone); `SkopeoCommand` makes sure of that.
    """

    def __init__(self, param_decls: Sequence[str], **attrs: Any) -> None:
        attrs.update(type=click.BOOL, is_flag=False, flag_value="true", metavar="[=BOOL]")
        super().__init__(param_decls, **attrs)


def bool_value_option(name: str, help_text: str) -> Callable[[F], F]:
    """A `BoolValueOption`: None when not given."""
    return click.option(name, cls=BoolValueOption, default=None, help=help_text)


class SkopeoCommand(click.Command):
    """A command whose `BoolValueOption`s parse as skopeo's do (see `bare_bools_as_true`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, bare_bools_as_true(args, self.params))


def bare_bools_as_true(args: list[str], params: Sequence[click.Parameter]) -> list[str]:
    """Spell each bare `--tls-verify` (any `BoolValueOption`) as `--tls-verify=true`.

    The values of other options (`--password --tls-verify`) and everything after `--` are
    left as they are.
    """
    bools = {name for p in params if isinstance(p, BoolValueOption) for name in p.opts}
    nargs = {
        name: p.nargs
        for p in params
        if isinstance(p, click.Option) and not isinstance(p, BoolValueOption)
        if not p.is_flag and not p.count
        for name in p.opts
    }
    out: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            return [*out, arg, *rest]
        out.append(f"{arg}=true" if arg in bools else arg)
        out.extend(itertools.islice(rest, nargs.get(arg, 0)))
    return out


TLS_VERIFY_HELP = "Require HTTPS and verify certificates (false: skip verification, allow HTTP)."


def _tls_mode(tls_verify: bool | None) -> TLSMode:
    return TLSMode.SKOPEO_NO_VERIFY if tls_verify is False else TLSMode.VERIFY


def parse_creds(text: str, origin: str) -> Credentials:
    """skopeo's `USERNAME[:PASSWORD]` (the password is empty when left out)."""
    username, _, password = text.partition(":")
    if not username:
        raise click.BadParameter(f"{origin} must be USERNAME[:PASSWORD], with a username")
    return Credentials(username=username, password=Secret(password), origin=origin)


def registry_options(side: str, values: dict[str, Any]) -> RegistryOptions:
    """RegistryOptions from skopeo's `--src-*` / `--dest-*` (or unprefixed) flags."""
    p = f"{side}_" if side else ""
    creds = None
    if values.get(f"{p}creds"):
        creds = parse_creds(values[f"{p}creds"], f"--{side + '-' if side else ''}creds")
    elif values.get(f"{p}username"):
        creds = Credentials(
            username=values[f"{p}username"],
            password=Secret(values.get(f"{p}password") or ""),
            origin=f"--{side + '-' if side else ''}username",
        )
    token = values.get(f"{p}registry_token")
    authfile = values.get(f"{p}authfile") or values.get("authfile")
    retries = values.get("request_retries")  # --retry-times of a single-image command
    return RegistryOptions(
        tls=_tls_mode(values.get(f"{p}tls_verify")),
        cert_dir=values.get(f"{p}cert_dir"),
        credentials=creds,
        authfile=authfile,
        no_creds=bool(values.get(f"{p}no_creds")),
        registry_token=Secret(token) if token else None,
        request_attempts=None if retries is None else retries + 1,
    )


def registry_flags(side: str) -> Callable[[F], F]:
    """skopeo's per-side registry flags: `--src-tls-verify`, `--dest-creds`, ..."""
    dash = f"{side}-" if side else ""
    opts = [
        bool_value_option(f"--{dash}tls-verify", TLS_VERIFY_HELP),
        click.option(
            f"--{dash}cert-dir", type=click.Path(path_type=Path), help="certs.d directory."
        ),
        click.option(f"--{dash}creds", metavar="USER[:PASS]", help="Credentials for the registry."),
        click.option(f"--{dash}username", help="Username (with --password)."),
        click.option(f"--{dash}password", help="Password (with --username)."),
        click.option(f"--{dash}registry-token", metavar="TOKEN", help="A bearer token to use."),
        click.option(f"--{dash}no-creds", is_flag=True, help="Access the registry anonymously."),
    ]
    if side:  # the unprefixed --authfile comes from `authfile_flag` (it reads REGISTRY_AUTH_FILE)
        opts.append(
            click.option(f"--{dash}authfile", type=click.Path(path_type=Path), help="Auth file.")
        )

    def decorate(f: F) -> F:
        for opt in reversed(opts):
            f = opt(f)
        return f

    return decorate


def retry_times_flag(f: F) -> F:
    """skopeo's `--retry-times N`: each registry request is tried at most N+1 times."""
    return click.option(
        "--retry-times",
        "request_retries",
        type=click.IntRange(0),
        metavar="N",
        help="Retries of a registry request that failed transiently (default 3).",
    )(f)


def authfile_flag(f: F) -> F:
    return click.option(
        "--authfile",
        type=click.Path(path_type=Path),
        envvar="REGISTRY_AUTH_FILE",
        help="Auth file (default: containers' and Docker's usual places).",
    )(f)


def pass_values(f: Callable[..., Any]) -> Callable[..., Any]:
    """Hand the command every parameter as one dict (keeps long flag lists out of signatures).

    A mirrord error raised before or after `run()` (a malformed reference, say) is reported
    the same way as one raised inside it: one line and its exit code, never a traceback.
    """

    @functools.wraps(f)
    def wrapper(**values: Any) -> Any:
        try:
            return f(values)
        except MirrordError as exc:
            report(exc)

    return wrapper
