"""Settings precedence, `init`, and the CLI's one-line errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli.app import app
from orchestrator.config import load_settings
from orchestrator.errors import ConfigError

runner = CliRunner()


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path, monkeypatch):
    config = tmp_path / "labeljob.toml"
    config.write_text('[labeljob]\nworkspace = "ws-from-file"\nregion = "eu-west-1"\nbackend = "mturk"\n')
    assert load_settings(config_file=config).region == "eu-west-1"
    assert load_settings(config_file=config).workspace == str(tmp_path / "ws-from-file")
    monkeypatch.setenv("LABELJOB_REGION", "us-west-2")
    settings = load_settings(config_file=config)
    assert (settings.region, settings.backend) == ("us-west-2", "mturk")
    settings = load_settings({"region": "ap-south-1", "profile": None}, config_file=config)
    assert settings.region == "ap-south-1"
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    monkeypatch.delenv("LABELJOB_REGION")
    defaults = load_settings(config_file=empty)
    assert (defaults.workspace, defaults.backend, defaults.region) == ("labeljob-workspace", "portal", None)


def test_bad_config_values_name_their_source_and_key(tmp_path, monkeypatch):
    config = tmp_path / "labeljob.toml"
    config.write_text('backend = "crowdflower"\n')
    with pytest.raises(ConfigError, match=r"labeljob.toml: backend"):
        load_settings(config_file=config)
    config.write_text("backend = [unclosed\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config_file=config)
    config.write_text("")
    monkeypatch.setenv("LABELJOB_FORMAT", "yaml")
    with pytest.raises(ConfigError, match="environment: format"):
        load_settings(config_file=config)


def test_init_writes_config_and_example_spec_that_validates(tmp_path):
    result = runner.invoke(app, ["--format", "json", "init", str(tmp_path), "--backend", "mturk"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert (tmp_path / "labeljob.toml").read_text().count('backend = "mturk"') == 1
    from orchestrator.spec import load_spec

    spec = load_spec(written["job_spec"])
    assert spec.backend == "mturk" and spec.mturk is not None and spec.mturk.sandbox is True


def test_init_refuses_to_overwrite_without_force(tmp_path):
    assert runner.invoke(app, ["init", str(tmp_path)]).exit_code == 0
    result = runner.invoke(app, ["init", str(tmp_path)])
    assert result.exit_code == 2
    assert "already exist" in result.stderr and "--force" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert runner.invoke(app, ["init", str(tmp_path), "--force"]).exit_code == 0


def test_unknown_format_is_a_usage_error():
    result = runner.invoke(app, ["--format", "xml", "status"])
    assert result.exit_code == 2 and "table" in result.output


def test_expected_errors_are_one_line_with_a_hint_and_no_traceback(tmp_path):
    result = runner.invoke(app, ["--workspace", str(tmp_path / "ws"), "status", "no-such-job"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: no job named 'no-such-job'")
    assert "Hint:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["launch", "estimate", "doctor"])
def test_a_missing_spec_file_is_one_line_with_a_hint(tmp_path, command):
    result = runner.invoke(app, ["--workspace", str(tmp_path / "ws"), command, str(tmp_path / "nope.toml")])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: job spec {tmp_path / 'nope.toml'}: no such file",
        "Hint: `labeljob init` writes an example spec",
    ]


def test_spec_errors_name_every_bad_key(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text(
        'name = "bad_name"\nlabels = []\nlabel_attribute = "bbox-metadata"\ninput_manifest = "in.manifest"\n'
        'output = "out"\ncolour = "red"\n[task]\nworkers_per_object = 0\ntime_limit = "soon"\n'
    )
    result = runner.invoke(app, ["launch", str(spec), "--dry-run"])
    assert result.exit_code == 1
    for key in (
        "name:",
        "labels:",
        "label_attribute:",
        "colour:",
        "task.workers_per_object:",
        "task.time_limit:",
    ):
        assert key in result.stderr
    assert "Traceback" not in result.stderr


def test_status_lists_no_jobs_in_a_new_workspace(tmp_path):
    result = runner.invoke(app, ["--format", "json", "--workspace", str(tmp_path / "new"), "status"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_an_empty_workspace_says_so_in_table_mode(tmp_path):
    workspace = tmp_path / "new"
    status = runner.invoke(app, ["--workspace", str(workspace), "status"])
    poll = runner.invoke(app, ["--workspace", str(workspace), "poll", "--all"])
    assert status.exit_code == poll.exit_code == 0
    assert status.stdout == poll.stdout == ""
    assert status.stderr.startswith(f"No jobs in {workspace.resolve().as_uri()}/")
    assert poll.stderr.startswith(f"No unfinished jobs in {workspace.resolve().as_uri()}/")


@pytest.mark.parametrize("command", [["demo"], ["portal", "simulate", "--job", "j"]])
def test_a_negative_seed_is_a_usage_error(tmp_path, command):
    result = runner.invoke(app, ["--workspace", str(tmp_path), *command, "--seed", "-1"])
    assert result.exit_code == 2 and "--seed" in result.output and "internal error" not in result.output


def test_poll_needs_a_name_or_all(tmp_path):
    result = runner.invoke(app, ["--workspace", str(tmp_path), "poll"])
    assert result.exit_code == 2 and "--all" in result.stderr


def test_a_global_option_after_the_command_is_refused_when_bad():
    result = runner.invoke(app, ["status", "--format", "xml"])
    assert result.exit_code == 2 and "table" in result.output


def test_global_options_work_after_the_command_too(tmp_path):
    workspace = str(tmp_path / "ws")
    after = runner.invoke(
        app, ["status", "--format", "json", "--workspace", workspace, "--region", "eu-west-1"]
    )
    assert after.exit_code == 0, after.output
    assert json.loads(after.stdout) == []
    # The one given last wins, as with any repeated option.
    table = runner.invoke(app, ["--format", "json", "status", "--format", "table", "--workspace", workspace])
    assert table.exit_code == 0 and table.stdout == ""
    quiet = runner.invoke(app, ["status", "--workspace", workspace, "-q"])
    loud = runner.invoke(app, ["status", "--workspace", workspace])
    assert quiet.exit_code == loud.exit_code == 0
    assert quiet.stderr == "" and "No jobs" in loud.stderr
    images = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "bucket" / "images"
    built = runner.invoke(app, ["manifest", "build", str(images), "--out", str(tmp_path / "m"), "-q"])
    assert built.exit_code == 0, built.output
    assert (tmp_path / "m" / "input.manifest").is_file()


def test_a_commands_own_option_keeps_its_meaning(tmp_path):
    manifest = tmp_path / "in.manifest"
    manifest.write_text("")
    result = runner.invoke(app, ["export", str(manifest), "--format", "csv", "--out", str(tmp_path / "o")])
    assert "No such option" not in result.output and "table or json" not in result.output


def _command_paths(group, prefix=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _command_paths(command, (*prefix, name))
        else:
            yield (*prefix, name)


def test_help_writes_every_placeholder_in_one_style():
    """Upper-case words (`--port PORT`, `SOURCE`) or a choice list (`table|json`); no `<int>`, `{name}`."""
    import re

    import typer

    paths = [(), *_command_paths(typer.main.get_command(app))]
    assert len(paths) > 20
    for path in paths:
        text = runner.invoke(app, [*path, "--help"]).stdout
        assert not re.search(r"<[a-z][a-z ]*>", text), (path, text)
        usage = text.split("\n", 1)[0]
        assert not re.search(r"[{\[][a-z]", usage), (path, usage)


@pytest.mark.parametrize(("value", "traceback"), [("0", False), ("off", False), ("", False), ("1", True)])
def test_labeljob_debug_0_means_off(tmp_path, monkeypatch, value, traceback):
    def broken(_st):
        raise RuntimeError("boom")

    monkeypatch.setattr("orchestrator.cli.job._job_store", broken)
    monkeypatch.setenv("LABELJOB_DEBUG", value)
    result = runner.invoke(app, ["status"])
    if traceback:
        assert isinstance(result.exception, RuntimeError)
    else:
        assert result.exit_code == 1 and result.stderr.startswith("Error: internal error: RuntimeError: boom")


def test_tables_keep_uris_whole_when_not_on_a_terminal(capsys):
    from orchestrator.cli._output import Output

    uri = "s3://a-bucket-with-a-long-name/" + "/".join(f"folder-{i:02d}" for i in range(20)) + "/x.manifest"
    Output().data(
        [{"split": "train", "objects": 8, "uri": uri}, {"split": "validation", "objects": 2, "uri": uri}]
    )
    lines = capsys.readouterr().out.splitlines()
    assert sum(uri in line for line in lines) == 2


def test_demo_next_steps_name_a_labeljob_that_runs_as_printed(tmp_path, monkeypatch):
    from orchestrator.cli.demo import program

    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    script = venv_bin / "labeljob"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr("sys.argv", [".venv/bin/labeljob", "demo"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert program() == str(script)  # `make demo`: the venv is not activated
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")
    assert program() == "labeljob"  # activated, or installed on PATH


def test_ctrl_c_while_the_cli_imports_is_one_line(monkeypatch, capsys):
    import builtins
    import sys

    from orchestrator.cli import main

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "orchestrator.cli.app":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "orchestrator.cli.app")
    monkeypatch.setattr(builtins, "__import__", interrupted)
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "Error: interrupted\n"
