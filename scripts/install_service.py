"""Render and install the memproxyd service file for systemd or launchd.

    .venv/bin/python scripts/install_service.py --user            # ~/.config/systemd/user
    sudo .venv/bin/python scripts/install_service.py --system     # /etc/systemd/system, User=you
    .venv/bin/python scripts/install_service.py --launchd         # ~/Library/LaunchAgents
    .venv/bin/python scripts/install_service.py --user --dry-run  # print, write nothing

The templates in systemd/ get the install path (the bin directory of the Python running this
script, i.e. the venv), the config file (found exactly as the daemon finds it) and the state
directory read from that config. Exit codes: 0 ok, 1 refused, 2 bad config.
"""
from __future__ import annotations

import argparse
import os
import pwd
import shutil
import sys
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import attrs

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from memproxyd.config import ConfigError, find_config_path, load_config  # noqa: E402

TEMPLATES = REPO / "systemd"
# systemd treats these specially even inside quotes; such paths are refused, not mangled.
_SYSTEMD_UNSAFE = set('"\\$') | {chr(c) for c in range(32)}


@attrs.frozen
class Variant:
    template: str
    directory: str        # default target directory; "~" is the installing user's home
    wanted_by: str
    next_steps: str


VARIANTS = {
    "user": Variant("memproxyd.service", "$XDG_CONFIG_HOME/systemd/user", "default.target",
                    "systemctl --user daemon-reload && systemctl --user enable --now memproxyd\n"
                    "# keep it running while you are logged out: loginctl enable-linger $USER"),
    "system": Variant("memproxyd.service", "/etc/systemd/system", "multi-user.target",
                      "sudo systemctl daemon-reload && sudo systemctl enable --now memproxyd"),
    "launchd": Variant("dev.memproxyd.plist", "~/Library/LaunchAgents", "",
                       "launchctl bootstrap gui/$(id -u) {path}"),
}


class InstallError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def service_user() -> str:
    """The user the service runs as: the one who ran sudo, else the current user."""
    return os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name


def expand_for(user: str, path: str) -> Path:
    """``~`` means the service user's home, even when this script runs under sudo."""
    if path == "~" or path.startswith("~/"):
        path = pwd.getpwnam(user).pw_dir + path[1:]
    return Path(path).absolute()


def _systemd_value(value: str) -> str:
    bad = sorted(set(value) & _SYSTEMD_UNSAFE)
    if bad:
        raise InstallError(f"path {value!r} contains {bad[0]!r}, which a systemd unit cannot hold")
    return value.replace("%", "%%")  # % starts a specifier


def render(variant: str, *, bindir: Path, config: Path, state_dirs: list[Path], user: str,
           log_dir: Path | None = None) -> str:
    """The service file text for ``variant`` with every @PLACEHOLDER@ filled in."""
    spec = VARIANTS[variant]
    text = (TEMPLATES / spec.template).read_text()
    if spec.template.endswith(".plist"):
        values = {"BINDIR": str(bindir), "CONFIG": str(config), "STATE_DIR": str(state_dirs[0]),
                  "LOG_DIR": str(log_dir or expand_for(user, "~/Library/Logs"))}
        values = {k: xml_escape(v) for k, v in values.items()}
    else:
        values = {k: _systemd_value(str(v)) for k, v in
                  {"BINDIR": bindir, "CONFIG": config}.items()}
        # "-": a missing directory does not fail the unit; the daemon creates it.
        values["STATE_DIRS"] = " ".join(f'"-{_systemd_value(str(d))}"' for d in state_dirs)
        values["WANTED_BY"] = spec.wanted_by
        values["SERVICE_USER"] = f"User={user}" if variant == "system" else \
            "# User= is implied: this is a per-user service"
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def target_dir(variant: str, user: str) -> Path:
    directory = VARIANTS[variant].directory
    xdg = os.environ.get("XDG_CONFIG_HOME") if not os.environ.get("SUDO_USER") else None
    directory = directory.replace("$XDG_CONFIG_HOME", xdg or "~/.config")
    return expand_for(user, directory)


def _state_dirs(config, user: str) -> list[Path]:
    state = expand_for(user, config.server.state_dir)
    dirs = [state]
    if config.server.registry:
        registry_dir = expand_for(user, config.server.registry).parent
        if registry_dir != state and state not in registry_dir.parents:
            dirs.append(registry_dir)
    return dirs


def _make_dirs(dirs: list[Path], user: str) -> None:
    for directory in dirs:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.geteuid() == 0 and user != "root":
            shutil.chown(directory, user=user)


def install(args: argparse.Namespace) -> int:
    user = service_user()
    try:
        config_path = find_config_path(args.config).absolute()
        config = load_config(config_path)
    except ConfigError as exc:
        raise InstallError(str(exc), code=2) from None
    bindir = Path(args.bindir).absolute() if args.bindir else Path(sys.prefix).absolute() / "bin"
    if not (bindir / "memproxyd").exists():
        print(f"warning: {bindir / 'memproxyd'} does not exist yet (run `make install`?)",
              file=sys.stderr)
    state_dirs = _state_dirs(config, user)
    text = render(args.variant, bindir=bindir, config=config_path, state_dirs=state_dirs,
                  user=user)
    if args.dry_run:
        sys.stdout.write(text)
        return 0
    directory = Path(args.output).absolute() if args.output else target_dir(args.variant, user)
    path = directory / VARIANTS[args.variant].template
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        _make_dirs(state_dirs, user)
    except OSError as exc:
        hint = " (for --system, run with sudo)" if args.variant == "system" else ""
        raise InstallError(f"cannot write {path}: {exc.strerror or exc}{hint}") from None
    print(f"wrote {path}")
    print("next: " + VARIANTS[args.variant].next_steps.format(path=path))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = "launchd" if sys.platform == "darwin" else "user"
    mode = parser.add_mutually_exclusive_group()
    for name, help_text in (("user", "systemd user service (default on Linux)"),
                            ("system", "system-wide systemd service running as you"),
                            ("launchd", "launchd agent (default on macOS)")):
        mode.add_argument(f"--{name}", dest="variant", action="store_const", const=name,
                          help=help_text)
    parser.set_defaults(variant=default)
    parser.add_argument("--config", help="config file (default: found as the daemon finds it)")
    parser.add_argument("--bindir", help="where memproxyd is installed (default: sys.prefix/bin)")
    parser.add_argument("--output", metavar="DIR", help="write into DIR instead of the default")
    parser.add_argument("--dry-run", action="store_true", help="print the file, write nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return install(args)
    except InstallError as exc:
        print(f"install_service: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
