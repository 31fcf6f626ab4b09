"""The project registry file: validation, refusals that change nothing, atomic locked writes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memproxyd import registry
from memproxyd.registry import (RegistryCorruptError, RegistryError, add_project, port_is_free,
                                read_registry)

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "state" / "projects.json"


def snapshot(path: Path) -> tuple[bytes, int] | None:
    return (path.read_bytes(), path.stat().st_mtime_ns) if path.exists() else None


@pytest.mark.parametrize("name", ["", "has space", "a/b", "..", ".hidden", "a\\b", "x" * 65,
                                  "-dash", "tab\t", "é", "alpha\n"])
def test_invalid_names_are_refused_and_nothing_is_written(path, name):
    with pytest.raises(RegistryError, match="invalid project name"):
        add_project(path, name, free_port())
    assert not path.exists()


@pytest.mark.parametrize("name", ["a", "alpha", "my-proj_2.0", "X" * 64])
def test_valid_names_are_accepted(name):
    assert registry.validate_name(name) == name


@pytest.mark.parametrize("port, reason", [(0, "privileged"), (80, "privileged"),
                                          (1023, "privileged"), (65536, "out of range"),
                                          (-1, "out of range"), ("8080", "integer"),
                                          (True, "integer")])
def test_bad_ports_are_refused(path, port, reason):
    with pytest.raises(RegistryError, match=reason):
        add_project(path, "alpha", port)
    assert not path.exists()


def test_added_project_is_read_back_with_port_created_and_description(path):
    port = free_port()
    project = add_project(path, "alpha", port, description="the alpha repo")
    assert read_registry(path) == {"alpha": project}
    assert project.port == port and project.description == "the alpha repo"
    assert project.created.endswith("+00:00")
    doc = json.loads(path.read_text())
    assert doc["version"] == 1
    assert doc["projects"]["alpha"]["port"] == port


def test_missing_file_is_an_empty_registry(path):
    assert read_registry(path) == {}


def test_duplicate_name_is_refused_and_file_unchanged(path):
    add_project(path, "alpha", free_port())
    before = snapshot(path)
    with pytest.raises(RegistryError, match="'alpha' already exists"):
        add_project(path, "alpha", free_port())
    assert snapshot(path) == before


def test_port_already_mapped_is_refused_and_file_unchanged(path):
    port = free_port()
    add_project(path, "alpha", port)
    before = snapshot(path)
    with pytest.raises(RegistryError, match=f"port {port} is already mapped to project 'alpha'"):
        add_project(path, "beta", port)
    assert snapshot(path) == before


def test_port_in_use_by_another_process_is_refused(path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not registry.port_is_free(port)
        with pytest.raises(RegistryError, match=f"port {port} is in use"):
            add_project(path, "alpha", port)
    assert not path.exists()


def test_port_picked_from_range_skips_mapped_busy_and_reserved_ports(path):
    base = free_port()
    # a range whose second port is free too (the machine is shared: busy ports come and go)
    while base + 4 > 65535 or not port_is_free(base + 1):  # pragma: no cover
        base = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + 1))
        busy.listen()
        add_project(path, "first", base)
        picked = add_project(path, "second", port_range=(base, base + 4), reserved=(base + 2,))
    # base+3 unless another process on this machine grabbed it in the meantime
    assert picked.port == base + 3 or (picked.port == base + 4 and not port_is_free(base + 3))


def test_full_range_is_refused(path):
    port = free_port()
    add_project(path, "alpha", port)
    with pytest.raises(RegistryError, match="no free port left"):
        add_project(path, "beta", port_range=(port, port))
    assert list(read_registry(path)) == ["alpha"]


def test_remove_returns_the_project_and_unknown_removal_changes_nothing(path):
    alpha = add_project(path, "alpha", free_port())
    add_project(path, "beta", free_port())
    assert registry.remove_project(path, "alpha") == alpha
    before = snapshot(path)
    with pytest.raises(RegistryError, match="no project named 'alpha'"):
        registry.remove_project(path, "alpha")
    assert snapshot(path) == before
    assert list(read_registry(path)) == ["beta"]


@pytest.mark.parametrize("content, reason", [
    ("{", "not valid JSON"),
    ("", "not valid JSON"),
    ("[]", "exactly"),
    ('{"version": 2, "projects": {}}', "unsupported version"),
    ('{"version": 1, "projects": []}', '"projects" must be an object'),
    ('{"version": 1, "projects": {"a b": {"port": 9000}}}', "invalid project name"),
    ('{"version": 1, "projects": {"a": {"port": 80}}}', "privileged"),
    ('{"version": 1, "projects": {"a": {"port": "9000"}}}', "expected an integer"),
    ('{"version": 1, "projects": {"a": {}}}', "missing 'port'"),
    ('{"version": 1, "projects": {"a": {"port": 9000, "prot": 1}}}', "unknown key 'prot'"),
    ('{"version": 1, "projects": {"a": {"port": 9000}, "b": {"port": 9000}}}', "mapped twice"),
    ('{"version": 1, "projects": {"a": {"port": 9000}, "a": {"port": 9001}}}', "duplicate key"),
])
def test_corrupt_registry_is_reported_with_file_and_reason_and_left_unchanged(path, content,
                                                                              reason):
    path.parent.mkdir(parents=True)
    path.write_text(content)
    before = snapshot(path)
    with pytest.raises(RegistryCorruptError) as excinfo:
        read_registry(path)
    assert str(path) in str(excinfo.value) and reason in str(excinfo.value)
    with pytest.raises(RegistryCorruptError):
        add_project(path, "gamma", free_port())
    with pytest.raises(RegistryCorruptError):
        registry.remove_project(path, "a")
    assert snapshot(path) == before


def test_failed_write_leaves_old_registry_intact_and_no_temp_files(path, monkeypatch):
    add_project(path, "alpha", free_port())
    before = snapshot(path)

    def crash(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk on fire"):
        add_project(path, "beta", free_port())
    monkeypatch.undo()
    assert snapshot(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["projects.json",
                                                             "projects.json.lock"]


def test_write_goes_through_a_synced_temp_file_in_the_same_directory(path, monkeypatch):
    replaced, synced = [], []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda s, d: replaced.append((s, d)) or real_replace(s, d))
    add_project(path, "alpha", free_port())
    [(src, dst)] = replaced
    assert Path(src).parent == path.parent and Path(dst) == path
    assert synced, "the temp file must be fsynced before the rename"


WORKER = textwrap.dedent("""\
    import sys
    from memproxyd.registry import add_project
    path, prefix = sys.argv[1], sys.argv[2]
    count, lo, hi = map(int, sys.argv[3:6])
    for i in range(count):
        add_project(path, f"{prefix}{i}", port_range=(lo, hi))
""")


def test_concurrent_writers_in_separate_processes_lose_no_mapping(path):
    # Ports below the Linux ephemeral range; busy ones are skipped by the picker.
    lo, hi, count = 23000, 23999, 25
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(path), prefix, str(count),
                               str(lo), str(hi)], cwd=REPO, stderr=subprocess.PIPE)
             for prefix in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    projects = read_registry(path)
    assert set(projects) == {f"{p}{i}" for p in "ab" for i in range(count)}
    ports = [p.port for p in projects.values()]
    assert len(set(ports)) == len(ports) and all(lo <= port <= hi for port in ports)
