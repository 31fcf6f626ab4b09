"""Render and install the memproxyd service file for systemd or launchd.

    .venv/bin/python scripts/install_service.py --user            # ~/.config/systemd/user
    sudo .venv/bin/python scripts/install_service.py --system     # /etc/systemd/system, User=you
    .venv/bin/python scripts/install_service.py --launchd         # ~/Library/LaunchAgents
    .venv/bin/python scripts/install_service.py --user --dry-run  # print, write nothing

The templates in systemd/ get:

* the entry point: ``--bindir``, else the ``memproxyd`` on ``PATH`` (a ``pipx``/``pip``
  install), else the one beside the Python running this script (the clone's ``.venv``; a
  warning says the unit then runs that checkout, which must stay where it is);
* the config, found exactly as the daemon finds it; when that is only the packaged default,
  a copy is written to the service user's ``~/.config/memproxyd/memproxyd.toml`` first, so the
  unit points at a file that is theirs to edit, outside the checkout;
* the state directory of that config: writable through ``ReadWritePaths``, and systemd's
  ``StateDirectory=memproxyd`` only where it is that very directory (``~/.local/state`` of a
  user unit, ``/var/lib`` of a system one); elsewhere systemd would create a second,
  unused one;
* ``PrivateTmp=yes``, unless the config or a state directory is under ``/tmp`` or
  ``/var/tmp``, which a private ``/tmp`` would hide from the daemon (then ``no``, and said).

Exit codes: 0 ok, 1 refused, 2 bad config.
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

from memproxyd.config import (PACKAGED_CONFIG, ConfigError, config_source,  # noqa: E402
                              load_config)

TEMPLATES = REPO / "systemd"
TMP_DIRS = (Path("/tmp"), Path("/var/tmp"))   # what PrivateTmp=yes replaces with its own
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
        values["STATE_DIRECTORY"] = _state_directory(variant, state_dirs[0], user)
        values["PRIVATE_TMP"] = _private_tmp([config, *state_dirs])
        # "-": a missing directory does not fail the unit; the daemon creates it.
        values["STATE_DIRS"] = " ".join(f'"-{_systemd_value(str(d))}"' for d in state_dirs)
        values["WANTED_BY"] = spec.wanted_by
        values["SERVICE_USER"] = f"User={user}" if variant == "system" else \
            "# User= is implied: this is a per-user service"
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def _state_directory(variant: str, state_dir: Path, user: str) -> str:
    """``StateDirectory=memproxyd`` when systemd's directory is ``state_dir`` itself."""
    base = Path("/var/lib") if variant == "system" else expand_for(user, "~/.local/state")
    if variant != "system" and os.environ.get("XDG_STATE_HOME") and not \
            os.environ.get("SUDO_USER"):
        base = Path(os.environ["XDG_STATE_HOME"])
    if state_dir == base / "memproxyd":
        return "StateDirectory=memproxyd\nStateDirectoryMode=0700"
    return (f"# no StateDirectory=: state_dir is {state_dir}, not {base / 'memproxyd'} "
            "(ReadWritePaths below)")


def _private_tmp(paths: list[Path]) -> str:
    hidden = [p for p in paths if any(t == p or t in p.parents for t in TMP_DIRS)]
    if not hidden:
        return "PrivateTmp=yes"
    return (f"# PrivateTmp=no: {hidden[0]} is under /tmp, which a private /tmp would hide\n"
            "PrivateTmp=no")


def entry_point(bindir: str | None) -> Path:
    """The bin directory of ``memproxyd``: ``--bindir``, the one on PATH, else this Python's."""
    if bindir:
        return Path(bindir).absolute()
    found = shutil.which("memproxyd")
    if found:
        return Path(found).absolute().parent
    return Path(sys.prefix).absolute() / "bin"


def _runs_a_checkout(bindir: Path) -> bool:
    """True when ``bindir`` is this Python's and memproxyd is installed editable there."""
    if bindir != Path(sys.prefix).absolute() / "bin":
        return False
    try:
        from importlib.metadata import distribution
        return '"editable": true' in (distribution("memproxyd").read_text("direct_url.json")
                                      or "")
    except Exception:
        return False


def user_config(user: str) -> Path:
    """The service user's per-user config path (the daemon's lookup, for that user)."""
    xdg = os.environ.get("XDG_CONFIG_HOME") if not os.environ.get("SUDO_USER") else None
    return expand_for(user, xdg or "~/.config") / "memproxyd" / "memproxyd.toml"


def _own_config(args, user: str) -> Path:
    """The config the unit names: the one found; the packaged default copied to the user's
    config path first (printed, or only announced with --dry-run)."""
    path, _ = config_source(args.config)
    if path.absolute().resolve() != PACKAGED_CONFIG.resolve():
        return path.absolute()
    target = user_config(user)
    if args.dry_run:
        print(f"# would write {target} (a copy of the packaged default)", file=sys.stderr)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(PACKAGED_CONFIG.read_text())
    if os.geteuid() == 0 and user != "root":
        for made in (target, target.parent):
            shutil.chown(made, user=user)
    print(f"wrote {target} (a copy of the packaged default: yours to edit; the service "
          "re-reads it on reload)")
    return target


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
        config = load_config(config_source(args.config)[0])
        config_path = _own_config(args, user)
    except ConfigError as exc:
        raise InstallError(str(exc), code=2) from None
    except OSError as exc:
        raise InstallError(f"cannot write the config: {exc.strerror or exc}") from None
    bindir = entry_point(args.bindir)
    if not (bindir / "memproxyd").exists():
        print(f"warning: {bindir / 'memproxyd'} does not exist yet (run `make install`?)",
              file=sys.stderr)
    elif _runs_a_checkout(bindir):
        print(f"note: {bindir / 'memproxyd'} runs the checkout at {REPO} (an editable "
              "install): keep it there, or install memproxyd (`pipx install .`) and run this "
              "again", file=sys.stderr)
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
    parser.add_argument("--bindir", help="where memproxyd is installed (default: the memproxyd "
                        "on PATH, else sys.prefix/bin)")
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
