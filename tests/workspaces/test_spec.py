"""A workspace as a user writes it: every mistake names its field, and the Host table's rules."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from proxy.config import configured_workspaces, load_config, workspace_config, workspace_setting
from proxy.errors import ConfigError
from proxy.settings import SettingError
from proxy.workspaces.hosts import HostTable, normalise_host
from proxy.workspaces.spec import WorkspaceSpec, parse_workspace
from proxy.workspaces.store import StoreError, WorkspaceStore

GOOD: dict[str, Any] = {
    "hosts": ["Alice.IDE.example.com", "*.alice.example.org"],
    "primary": "http://10.0.0.5:8080",
    "standby": "http://10.0.0.6:8080/",
}


def spec(name: str = "alice", **changes: Any) -> WorkspaceSpec:
    return parse_workspace(name, {**GOOD, **changes}, workspace_setting)


def test_a_good_document_is_normalised_and_round_trips() -> None:
    alice = spec(health={"interval": 0.5, "fall": 3}, failback="manual")
    assert alice.hosts == ("alice.ide.example.com", "*.alice.example.org")
    assert str(alice.standby) == "http://10.0.0.6:8080/"
    assert alice.overrides == {"health.interval": 0.5, "health.fall": 3, "failback": "manual"}
    again = parse_workspace("alice", alice.document(), workspace_setting)
    assert again == alice


@pytest.mark.parametrize(
    ("name", "changes", "field", "problem"),
    [
        ("alice", {"primary": "ftp://x"}, "workspaces.alice.primary", "expected http://"),
        ("alice", {"standby": "http://10.0.0.5:8080"}, "workspaces.alice.standby", "must differ"),
        ("alice", {"hosts": []}, "workspaces.alice.hosts", "non-empty list"),
        ("alice", {"hosts": "alice.test"}, "workspaces.alice.hosts", "non-empty list"),
        ("alice", {"hosts": ["alice.test:8080"]}, "workspaces.alice.hosts", "without port"),
        ("alice", {"hosts": ["10.1.2.3"]}, "workspaces.alice.hosts", "an address"),
        ("alice", {"hosts": ["bad host"]}, "workspaces.alice.hosts", "not a host name"),
        ("alice", {"colour": "red"}, "workspaces.alice.colour", "unknown key"),
        ("alice", {"health": {"intervl": 1}}, "workspaces.alice.health.intervl", "unknown key"),
        ("alice", {"health": {"fall": -1}}, "workspaces.alice.health.fall", ""),
        ("alice", {"listen": "0.0.0.0:1"}, "workspaces.alice.listen", "unknown key"),
        ("Alice!", {}, "workspaces.Alice!", "[a-z0-9-]"),
    ],
)
def test_each_mistake_names_its_field(
    name: str, changes: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(SettingError) as caught:
        spec(name, **changes)
    assert caught.value.key == field
    assert problem in caught.value.problem
    assert "\n" not in str(caught.value)


def test_a_missing_backend_is_named() -> None:
    with pytest.raises(SettingError, match=r"workspaces\.bob\.standby: missing"):
        parse_workspace("bob", {"hosts": ["bob.test"], "primary": "http://a:1"}, workspace_setting)


def test_hosts_match_exactly_then_by_the_longest_suffix_then_the_catch_all() -> None:
    alice = spec()
    bob = spec(
        "bob", hosts=["*.example.org", "bob.test"], primary="http://b:1", standby="http://b:2"
    )
    table = HostTable([alice, bob])
    assert table.lookup(b"ALICE.ide.example.com:8443") == "alice"
    assert table.lookup("x.y.alice.example.org") == "alice"  # longer suffix than bob's
    assert table.lookup("carol.example.org") == "bob"
    # alice's wildcard needs a label before its suffix: this name is bob's *.example.org.
    assert table.lookup("alice.example.org") == "bob"
    assert table.lookup("bob.test.") == "bob"
    for nobody in (
        None,
        b"",
        b"10.0.0.5",
        b"10.0.0.5:80",
        b"[::1]:80",
        b"\xff garbage",
        "evil.test",
    ):
        assert table.lookup(nobody) is None
    fallback = spec("carol", hosts=["*"], primary="http://c:1", standby="http://c:2")
    table.claim(fallback)
    assert table.lookup(b"10.0.0.5") == "carol"
    assert table.lookup(None) == "carol"
    assert table.lookup(b"ALICE.ide.example.com") == "alice"


def test_a_host_claimed_twice_is_refused_naming_the_owner() -> None:
    with pytest.raises(
        SettingError,
        match=r"workspaces\.bob\.hosts: '\*\.alice\.example\.org' is already claimed by"
        r" workspace 'alice'",
    ):
        HostTable([spec(), spec("bob", hosts=["*.alice.example.org"])])


def test_the_memo_is_bounded_whatever_hosts_clients_send() -> None:
    table = HostTable([spec()])
    for i in range(10_000):
        table.lookup(f"h{i}.test".encode())
    assert table.lookup(b"alice.ide.example.com") == "alice"
    assert len(table._memo) <= 4096  # noqa: SLF001 - the bound is the point of this test


def test_normalise_host() -> None:
    assert normalise_host(b"Example.COM.:443") == "example.com"
    assert normalise_host(b"127.0.0.1:8080") is None
    assert normalise_host("[2001:db8::1]:80") is None


def test_the_toml_gives_workspaces_overrides_and_a_default(tmp_path: Path) -> None:
    toml = tmp_path / "proxy.toml"
    toml.write_text(
        'default_workspace = "bob"\n'
        "[health]\ninterval = 2.0\n"
        '[workspaces.alice]\nhosts = ["alice.test"]\nprimary = "http://a:1"\nstandby = "http://a:2"\n'
        'failback = "manual"\n'
        "[workspaces.alice.health]\ninterval = 0.5\nfall = 3\n"
        '[workspaces.bob]\nhosts = ["bob.test"]\nprimary = "http://b:1"\nstandby = "http://b:2"\n'
    )
    config = load_config(file=toml)
    alice, bob = configured_workspaces(config)
    assert bob.hosts == ("bob.test",)  # the fallback is the table's, not bob's document's
    assert HostTable([alice, bob], config.default_workspace).lookup(b"10.0.0.1") == "bob"
    seen = workspace_config(config, alice)
    assert (seen.health.interval, seen.health.timeout, seen.health.fall) == (0.5, 0.5, 3)
    assert seen.failback == "manual"
    assert str(seen.primary) == "http://a:1/"
    assert workspace_config(config, bob).health.interval == 2.0


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[workspaces.alice]\nhosts = ["a.test"]\nstandby = "http://a:2"\n',
            "workspaces.alice.primary: missing",
        ),
        (
            '[workspaces.a]\nhosts = ["x.test"]\nprimary = "http://a:1"\nstandby = "http://a:2"\n'
            '[workspaces.b]\nhosts = ["X.test"]\nprimary = "http://b:1"\nstandby = "http://b:2"\n',
            "workspaces.b.hosts: 'x.test' is already claimed by workspace 'a'",
        ),
        ('primary = "http://a:1"\n', "standby: missing: give --standby or DUMONT_STANDBY"),
        (
            'default_workspace = "zed"\n[workspaces.a]\nhosts = ["x.test"]\n'
            'primary = "http://a:1"\nstandby = "http://a:2"\n',
            "default_workspace: no workspace 'zed' is configured",
        ),
        (
            'default_workspace = "a"\nprimary = "http://d:1"\nstandby = "http://d:2"\n'
            '[workspaces.a]\nhosts = ["x.test"]\nprimary = "http://a:1"\nstandby = "http://a:2"\n',
            "default_workspace: workspace 'default' already answers every Host",
        ),
        ("", "primary: missing"),
    ],
)
def test_a_bad_file_stops_start_up_with_one_line(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(file=path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_store_keeps_documents_and_deletions(tmp_path: Path) -> None:
    store = WorkspaceStore(tmp_path)
    store.put("alice", spec().document())
    store.put("bob", {"hosts": ["bob.test"]})
    store.delete("bob")
    store.close()
    again = WorkspaceStore(tmp_path)
    live, deleted = again.load()
    again.close()
    assert live == {"alice": spec().document()}
    assert deleted == {"bob"}


def test_a_corrupt_store_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "workspaces.sqlite3"
    garbage = b"not a database at all\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(StoreError, match="corrupt or not a workspace store"):
        WorkspaceStore(tmp_path)
    assert path.read_bytes() == garbage


def test_someone_elses_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "workspaces.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a workspace store"):
        WorkspaceStore(tmp_path)
    assert path.read_bytes() == before
