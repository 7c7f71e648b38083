"""login and logout: manage auth.json entries like skopeo/podman (files written 0600)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mirrord.cli import main
from mirrord.cli.common import TLS_VERIFY_HELP, bool_value_option, fail, pass_values, run
from mirrord.errors import InvalidReference
from mirrord.refs import REPOSITORY_RE, check_registry, normalize_registry
from mirrord.registry import credentials as creds_store
from mirrord.registry.client import RegistryClient
from mirrord.registry.http import RegistryHttp
from mirrord.registry.options import Credentials, RegistryOptions, TLSMode
from mirrord.secret import Secret

DEFAULT_AUTHFILE_HELP = "$XDG_RUNTIME_DIR/containers/auth.json, else /run/containers/UID/auth.json"


def _options(values: dict[str, Any], credentials: Credentials | None) -> RegistryOptions:
    tls = TLSMode.SKOPEO_NO_VERIFY if values.get("tls_verify") is False else TLSMode.VERIFY
    return RegistryOptions(tls=tls, cert_dir=values.get("cert_dir"), credentials=credentials)


async def _verify(host: str, options: RegistryOptions) -> None:
    """Prove the credentials work: an authenticated ping (and a token, for token auth)."""
    client = RegistryClient(RegistryHttp(host, options, role="login"))
    try:
        await client.ping()
        await client.http.auth.header((), await client.http.base_url())
        async with client.http.open("GET", "/v2/", scopes=(), method_class="ping", what="login"):
            pass
    finally:
        await client.close()


def _credentials_key(text: str) -> tuple[str, str | None]:
    """`REGISTRY` or `REGISTRY/NAMESPACE` (skopeo's auth-file key) -> (registry, namespace)."""
    host, sep, namespace = text.removeprefix("docker://").partition("/")
    if sep and REPOSITORY_RE.fullmatch(namespace) is None:
        raise InvalidReference(
            f"invalid registry {text[:260]!r}: expected REGISTRY or REGISTRY/NAMESPACE, "
            "without a tag or digest"
        )
    return normalize_registry(check_registry(host)), namespace or None


def _password(values: dict[str, Any]) -> str:
    if values["password_stdin"]:
        return sys.stdin.readline().rstrip("\n")
    if values["password"] is not None:
        return str(values["password"])
    return str(click.prompt("Password", hide_input=True))


@main.command()
@click.argument("registry")
@click.option("-u", "--username", help="Username (prompted for when missing).")
@click.option("-p", "--password", help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option(
    "--authfile",
    type=click.Path(path_type=Path),
    envvar="REGISTRY_AUTH_FILE",
    help=f"Auth file to write (default: {DEFAULT_AUTHFILE_HELP}).",
)
@bool_value_option("--tls-verify", TLS_VERIFY_HELP)
@click.option("--cert-dir", type=click.Path(path_type=Path), help="certs.d directory.")
@click.option("--get-login", is_flag=True, help="Print the user logged in to REGISTRY.")
@pass_values
def login(values: dict[str, Any]) -> None:
    """Log in to a registry: check the credentials, then store them in the auth file.

    REGISTRY may be REGISTRY/NAMESPACE: the credentials are checked against the registry and
    stored for that namespace only, as skopeo does.
    """
    host, namespace = _credentials_key(values["registry"])
    key = f"{host}/{namespace}" if namespace else host
    if values["get_login"]:
        _print_login(key, host, namespace, values["authfile"])
        return
    username = values["username"] or click.prompt("Username")
    password = Secret(_password(values))
    run(_verify(host, _options(values, Credentials(username, password, origin="login"))))
    creds_store.store_credentials(
        creds_store.write_target(values["authfile"]), key, username, password
    )
    click.echo("Login Succeeded!")


def _print_login(key: str, host: str, namespace: str | None, authfile: Path | None) -> None:
    """`--get-login`: the user stored for `key`, searched for as every command searches."""
    found = creds_store.lookup(host, namespace, RegistryOptions(authfile=authfile))
    if found is None:
        fail(f"not logged into {key}")
    click.echo(found.username)


@main.command()
@click.argument("registry", required=False)
@click.option("-a", "--all", "all_", is_flag=True, help="Remove every stored credential.")
@click.option(
    "--authfile",
    type=click.Path(path_type=Path),
    envvar="REGISTRY_AUTH_FILE",
    help=f"Auth file to edit (default: {DEFAULT_AUTHFILE_HELP}).",
)
@bool_value_option(
    "--tls-verify", "Accepted for skopeo compatibility (logout reaches no registry)."
)
@pass_values
def logout(values: dict[str, Any]) -> None:
    """Remove the stored credentials for REGISTRY (or --all)."""
    if not values["registry"] and not values["all_"]:
        fail("logout needs a REGISTRY or --all", 2)
    path = creds_store.write_target(values["authfile"])
    host = (
        None if values["all_"] else normalize_registry(values["registry"].removeprefix("docker://"))
    )
    removed = creds_store.remove_credentials(path, host)
    if removed == 0 and host is not None:
        fail(f"not logged into {host}")
    click.echo("Removed login credentials for " + (host or "all registries"))
