"""The systemd unit and launchd plist templates, rendered by scripts/install_service.py."""
from __future__ import annotations

import importlib.util
import os
import plistlib
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _load_installer():
    spec = importlib.util.spec_from_file_location("install_service",
                                                  REPO / "scripts" / "install_service.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


installer = _load_installer()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("SUDO_USER", "MEMPROXYD_CONFIG", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bindir(tmp_path) -> Path:
    """A stand-in memproxyd executable (systemd-analyze checks that ExecStart exists)."""
    directory = tmp_path / "venv bin"
    directory.mkdir()
    exe = directory / "memproxyd"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return directory


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "memproxyd.toml"
    path.write_text(f'[server]\nport = 18764\nstate_dir = "{tmp_path / "state"}"\n')
    return path


def install(*argv) -> int:
    return installer.main(list(map(str, argv)))


def render(variant, bindir, config, out, *extra) -> str:
    assert install(f"--{variant}", "--bindir", bindir, "--config", config, "--output", out,
                   *extra) == 0
    return next(Path(out).iterdir()).read_text()


def directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_system_unit_has_lifecycle_and_hardening(tmp_path, bindir, config):
    unit = directives(render("system", bindir, config, tmp_path / "out"))
    exe = f'"{bindir}/memproxyd"'
    assert unit["Type"] == ["notify"]
    assert unit["ExecStartPre"] == [f'{exe} --check --config "{config}"']
    assert unit["ExecStart"] == [f'{exe} --config "{config}"']
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Restart"] == ["on-failure"]
    assert "StateDirectory" not in unit          # state_dir is not /var/lib/memproxyd
    assert f'"MEMPROXYD_CONFIG={config}"' in unit["Environment"]
    assert unit["User"] == [pwd.getpwuid(os.getuid()).pw_name]
    assert unit["WantedBy"] == ["multi-user.target"]
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "read-only",
                       "NoNewPrivileges": "yes", "PrivateTmp": "no"}.items():  # tmp_path: /tmp
        assert unit[key] == [value]
    assert unit["ReadWritePaths"] == [f'"-{tmp_path / "state"}"']


def test_user_unit_has_no_user_line_and_targets_default(tmp_path, bindir, config):
    unit = directives(render("user", bindir, config, tmp_path / "out"))
    assert "User" not in unit
    assert unit["WantedBy"] == ["default.target"]
    assert unit["ReadWritePaths"] == [f'"-{tmp_path / "state"}"']


def test_no_placeholder_survives_rendering(tmp_path, bindir, config):
    for variant in ("user", "system", "launchd"):
        assert not re.search(r"@[A-Z_]+@", render(variant, bindir, config, tmp_path / variant))


def test_registry_outside_state_dir_is_writable_too(tmp_path, bindir):
    config = tmp_path / "c.toml"
    config.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n'
                      f'registry = "{tmp_path / "shared" / "projects.json"}"\n')
    unit = directives(render("user", bindir, config, tmp_path / "out"))
    assert unit["ReadWritePaths"] == [f'"-{tmp_path / "state"}" "-{tmp_path / "shared"}"']


def test_sudo_user_is_the_service_user_and_tilde_is_their_home(tmp_path, bindir, monkeypatch,
                                                               capsys):
    try:
        other = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user")
    monkeypatch.setenv("SUDO_USER", "nobody")
    config = tmp_path / "c.toml"
    config.write_text('[server]\nstate_dir = "~/.local/state/memproxyd"\n')
    assert install("--system", "--bindir", bindir, "--config", config, "--dry-run") == 0
    unit = directives(capsys.readouterr().out)
    assert unit["User"] == ["nobody"]
    assert unit["ReadWritePaths"] == [f'"-{other.pw_dir}/.local/state/memproxyd"']


def test_dry_run_prints_and_writes_nothing(tmp_path, bindir, config, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert install("--user", "--bindir", bindir, "--config", config, "--dry-run") == 0
    assert "Type=notify" in capsys.readouterr().out
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "state").exists()


def test_user_install_writes_xdg_unit_creates_state_dir_and_prints_next_step(
        tmp_path, bindir, config, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert install("--user", "--bindir", bindir, "--config", config) == 0
    assert (tmp_path / "xdg" / "systemd" / "user" / "memproxyd.service").exists()
    assert (tmp_path / "state").is_dir()
    assert ("systemctl --user daemon-reload && systemctl --user enable --now memproxyd"
            in capsys.readouterr().out)


def test_launchd_plist_runs_at_load_and_restarts_only_on_failure(tmp_path, bindir, config):
    plist = plistlib.loads(render("launchd", bindir, config, tmp_path / "out").encode())
    assert plist["ProgramArguments"] == [f"{bindir}/memproxyd", "--config", str(config)]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["EnvironmentVariables"]["MEMPROXYD_CONFIG"] == str(config)
    assert plist["StandardOutPath"].endswith("/Library/Logs/memproxyd.log")
    assert plist["StandardErrorPath"].endswith("/Library/Logs/memproxyd.err.log")


def test_plist_escapes_xml_in_paths(tmp_path, bindir):
    config = tmp_path / "a&b <c>.toml"
    config.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n')
    plist = plistlib.loads(render("launchd", bindir, config, tmp_path / "out").encode())
    assert plist["ProgramArguments"][2] == str(config)


@pytest.mark.parametrize("bad", ['q"uote', "dollar$HOME", "back\\slash"])
def test_paths_a_unit_cannot_hold_are_refused(tmp_path, bindir, bad, capsys):
    config = tmp_path / f"{bad}.toml"
    config.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n'.replace("\\", "/"))
    code = install("--system", "--bindir", bindir, "--config", config, "--output", tmp_path / "o")
    assert code == 1 and "cannot hold" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_config_exits_2(tmp_path, bindir, capsys):
    config = tmp_path / "c.toml"
    config.write_text("[server]\nprot = 1\n")
    assert install("--user", "--bindir", bindir, "--config", config, "--dry-run") == 2
    assert "unknown key 'server.prot'" in capsys.readouterr().err


def _verify(unit: Path, *flags: str, env: dict | None = None) -> None:
    result = subprocess.run([SYSTEMD_ANALYZE, *flags, "verify", str(unit)], capture_output=True,
                            text=True, timeout=60, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are only warnings naming the file; there must be none.
    assert str(unit) not in result.stderr and unit.name not in result.stderr, result.stderr


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
def test_system_unit_passes_systemd_analyze_verify(tmp_path, bindir):
    # Spaces and % in paths must survive quoting and specifier escaping.
    config = tmp_path / "my config 100%.toml"
    config.write_text(f'[server]\nstate_dir = "{tmp_path / "state dir"}"\n')
    render("system", bindir, config, tmp_path / "out")
    _verify(tmp_path / "out" / "memproxyd.service")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
def test_user_unit_passes_systemd_analyze_verify(tmp_path, bindir, config):
    render("user", bindir, config, tmp_path / "out")
    runtime = tmp_path / "runtime"  # --user needs a runtime dir, absent in containers/CI
    runtime.mkdir(mode=0o700)
    env = {} if os.environ.get("XDG_RUNTIME_DIR") else {"XDG_RUNTIME_DIR": str(runtime)}
    _verify(tmp_path / "out" / "memproxyd.service", "--user", env=env)


def test_state_directory_only_where_it_is_the_state_dir_and_private_tmp_unless_under_tmp():
    user = pwd.getpwuid(os.getuid()).pw_name
    default_state = installer.expand_for(user, "~/.local/state/memproxyd")
    config = Path("/etc/memproxyd/memproxyd.toml")
    kwargs = dict(bindir=Path("/usr/bin"), config=config, user=user)
    user_unit = directives(installer.render("user", state_dirs=[default_state], **kwargs))
    assert user_unit["StateDirectory"] == ["memproxyd"] and user_unit["PrivateTmp"] == ["yes"]
    system_unit = directives(installer.render("system", state_dirs=[default_state], **kwargs))
    assert "StateDirectory" not in system_unit            # /var/lib/memproxyd is not it
    system_unit = directives(installer.render("system", state_dirs=[Path("/var/lib/memproxyd")],
                                              **kwargs))
    assert system_unit["StateDirectory"] == ["memproxyd"]
    in_tmp = installer.render("user", state_dirs=[default_state], bindir=Path("/usr/bin"),
                              config=Path("/tmp/mine.toml"), user=user)
    assert directives(in_tmp)["PrivateTmp"] == ["no"]
    assert "/tmp/mine.toml is under /tmp" in in_tmp


def test_without_a_config_the_packaged_default_is_copied_to_the_users_config(
        tmp_path, bindir, capsys, monkeypatch):
    if installer.config_source()[0] != installer.PACKAGED_CONFIG:
        pytest.skip("a config exists on this machine (/etc/memproxyd)")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")     # the installed entry point
    assert install("--user", "--output", tmp_path / "out") == 0
    mine = tmp_path / "xdg" / "memproxyd" / "memproxyd.toml"
    assert mine.read_text() == installer.PACKAGED_CONFIG.read_text()
    assert f"wrote {mine}" in capsys.readouterr().out
    unit = directives((tmp_path / "out" / "memproxyd.service").read_text())
    assert unit["ExecStart"] == [f'"{bindir}/memproxyd" --config "{mine}"']
    # the next install finds that file, as the daemon will, and leaves it alone
    mine.write_text(mine.read_text() + "# edited\n")
    assert install("--user", "--output", tmp_path / "out2") == 0
    assert mine.read_text().endswith("# edited\n")
