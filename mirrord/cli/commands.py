"""Which module defines each command. Modules are imported only when their command runs, so
`mirrord copy` never pays for the database or the config schema, nor `mirrord status` for HTTP."""

COMMANDS = {
    "copy": "mirrord.cli.images",
    "inspect": "mirrord.cli.images",
    "list-tags": "mirrord.cli.images",
    "delete": "mirrord.cli.images",
    "manifest-digest": "mirrord.cli.images",
    "login": "mirrord.cli.auth",
    "logout": "mirrord.cli.auth",
    "check-config": "mirrord.cli.config_cmds",
    "convert": "mirrord.cli.config_cmds",
    "plan": "mirrord.cli.sync",
    "sync": "mirrord.cli.sync",
    "run": "mirrord.cli.ops",
    "status": "mirrord.cli.ops",
    "jobs": "mirrord.cli.ops",
    "retry": "mirrord.cli.ops",
    "cancel": "mirrord.cli.ops",
    "enqueue": "mirrord.cli.ops",
    "db": "mirrord.cli.db",
    "demo": "mirrord.cli.demo",
    "export": "mirrord.cli.bundle",
    "import": "mirrord.cli.bundle",
    "verify": "mirrord.cli.bundle",
}
