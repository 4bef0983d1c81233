"""The network config ~/.saxsdognetwork and saxsnetconf."""

from __future__ import annotations

import json
import logging
import os
import stat

import jsonschema
import pytest

from saxs_pipeline.cli import netconf as cli
from saxs_pipeline.control.netconf import (
    NetConfError,
    NetEntry,
    bind_address,
    config_path,
    load_network,
    new_secret,
    parse_network,
    select_entry,
    split_url,
    write_network,
)
from saxs_pipeline.control.protocol import schema_path


def test_reads_the_originals_list_form(tmp_path):
    path = tmp_path / "net"
    path.write_text(json.dumps([
        {"Server": "tcp://localhost:9723", "Feeder": "tcp://localhost:9823",
         "Secret": "abc", "Name": "Queue1"},
        {"Server": "tcp://beamline:7777", "Feeder": "tcp://beamline:5556",
         "Secret": "def", "Name": "Queue2"},
    ]))
    path.chmod(0o600)
    entries = load_network(path)
    assert entries[1] == NetEntry("tcp://beamline:7777", "tcp://beamline:5556", "def", "Queue2")
    assert select_entry(entries, 0).secret == "abc"
    with pytest.raises(NetConfError, match="no server entry 2"):
        select_entry(entries, 2)


def test_reads_the_manuals_single_object_form():
    (entry,) = parse_network({"ServerUrl": "tcp://x:1", "FeederUrl": "tcp://x:2", "Secret": "s"})
    assert (entry.server, entry.feeder, entry.secret) == ("tcp://x:1", "tcp://x:2", "s")


@pytest.mark.parametrize("bad, message", [
    ([], "empty"),
    ("text", "must be a JSON list"),
    ([{"Server": "tcp://x:1", "Colour": "red"}], r"\$\[0\]: unknown key"),
    ([{"Server": "http://x:1"}], r"\$\[0\].Server: .* not a tcp://host:port"),
    ([{"Secret": 5}], r"\$\[0\].Secret: must be a string"),
])
def test_bad_configs_name_the_problem(bad, message):
    with pytest.raises(NetConfError, match=message):
        parse_network(bad, "cfg")


def test_shipped_schema_matches_both_forms():
    schema = json.loads(schema_path("NetworkSchema.json").read_text())
    jsonschema.validate([NetEntry(secret="x").to_json()], schema)
    jsonschema.validate({"ServerUrl": "tcp://a:1", "FeederUrl": "tcp://a:2", "Secret": "s"}, schema)


def test_path_from_option_env_or_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SAXSDOG_NETWORK", str(tmp_path / "env"))
    assert config_path() == tmp_path / "env"
    assert config_path(tmp_path / "opt") == tmp_path / "opt"
    monkeypatch.delenv("SAXSDOG_NETWORK")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config_path() == tmp_path / ".saxsdognetwork"


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(NetConfError, match="not found"):
        load_network(tmp_path / "nope")
    (tmp_path / "bad").write_text("{")
    with pytest.raises(NetConfError, match="not valid JSON"):
        load_network(tmp_path / "bad")


def test_written_file_is_private_and_round_trips(tmp_path):
    entries = [NetEntry(secret=new_secret())]
    path = write_network(tmp_path / "sub" / "net", entries)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_network(path) == entries
    assert json.loads(path.read_text())[0]["Name"] == "Queue1"


def test_secrets_are_long_and_random():
    a, b = new_secret(), new_secret()
    assert a != b and len(a) >= 32 and int(a, 16) >= 0
    assert len(new_secret(1)) == 32  # never below 128 bits


def test_warns_when_others_can_read(tmp_path, caplog):
    path = write_network(tmp_path / "net", [NetEntry(secret="s" * 20)])
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        load_network(path)
    assert "chmod 600" in caplog.text


def test_urls_and_bind_addresses():
    assert split_url("tcp://localhost:9723") == ("localhost", 9723)
    assert split_url("tcp://*:5556") == ("*", 5556)
    with pytest.raises(ValueError):
        split_url("tcp://host")
    assert bind_address("localhost", 9723) == "tcp://127.0.0.1:9723"
    assert bind_address("*", 1) == "tcp://*:1"
    assert bind_address("127.0.0.1", 0) == "tcp://127.0.0.1:*"


def test_saxsnetconf_creates_checks_and_refuses_to_clobber(tmp_path, capsys):
    path = tmp_path / "net"
    assert cli.main(["--config", str(path), "--server", "tcp://localhost:5000", "--print"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[0]["Server"] == "tcp://localhost:5000"
    assert len(printed[0]["Secret"]) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = printed[0]["Secret"]

    # A second run only checks; asking for changes without --force is an error.
    assert cli.main(["--config", str(path)]) == 0
    assert "1 server(s)" in capsys.readouterr().err
    assert cli.main(["--config", str(path), "--server", "tcp://localhost:6000"]) == 1
    assert load_network(path)[0].secret == secret

    assert cli.main(["--config", str(path), "--add", "--server", "tcp://localhost:6000"]) == 0
    entries = load_network(path)
    assert [e.name for e in entries] == ["Queue1", "Queue2"]
    assert entries[0].secret == secret and entries[1].secret != secret

    assert cli.main(["--config", str(path), "--force", "--secret", "x" * 32]) == 0
    assert [e.secret for e in load_network(path)] == ["x" * 32]


def test_saxsnetconf_warns_and_fixes_permissions(tmp_path, capsys):
    path = write_network(tmp_path / "net", [NetEntry(secret="s" * 32)])
    path.chmod(0o640)
    assert cli.main(["--config", str(path)]) == 0
    assert "chmod 600" in capsys.readouterr().err
    assert cli.main(["--config", str(path), "--fix-permissions"]) == 0
    assert "chmod 600" not in capsys.readouterr().err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_saxsnetconf_uses_the_env_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAXSDOG_NETWORK", str(tmp_path / "envnet"))
    assert cli.main([]) == 0
    assert (tmp_path / "envnet").exists()
