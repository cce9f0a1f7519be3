"""The configuration (CONTRACT.md, Configuration): unknown keys and bad values stop start-up
with a message naming the key; relative paths are relative to the file's folder;
MAILGATE_CONFIG picks the file and MAILGATE_DATABASE_URL overrides [database] url."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailgate import config as config_mod
from mailgate.errors import ConfigError
from mailgate.keys import load_secret

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = '[mailgate]\nsecret_key = "s3cret-for-tests-that-is-32-bytes-long"\n'


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mailgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> config_mod.Config:
    return config_mod.load(write(tmp_path, text), environ=environ or {})


def test_the_shipped_config_is_valid_and_complete():
    cfg = config_mod.load(ROOT / "config" / "mailgate.toml", environ={})
    assert cfg.inbound.smtp_listen == "127.0.0.1:2525"
    assert cfg.data_dir == (ROOT / "var").resolve()
    assert cfg.database.url == f"sqlite:///{(ROOT / 'var' / 'mailgate.db').resolve()}"
    assert cfg.outbound.transport == f"maildir:{(ROOT / 'var' / 'sent').resolve()}"
    assert cfg.addresses.categories == {"billing@example.com": "Billing"}


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[inbound]\nsmtp_lisen = "127.0.0.1:25"\n', "inbound.smtp_lisen"),
        ('[inbnd]\nsmtp_listen = "127.0.0.1:25"\n', "inbnd"),
        ("[outbound]\nretries = 3\n", "outbound.retries"),
        ('[[imap.mailboxes]]\nhost = "h"\nusername = "u"\npassword = "p"\nfoldr = "X"\n',
         "imap.mailboxes[0].foldr"),
    ],
)
def test_unknown_keys_are_refused_by_name(tmp_path: Path, toml: str, key: str):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, MINIMAL + toml)
    assert key in str(err.value)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[inbound]\nmax_message_bytes = "40M"\n', "inbound.max_message_bytes"),
        ("[inbound]\nmax_message_bytes = true\n", "inbound.max_message_bytes"),
        ("[inbound]\nmax_message_bytes = 10\n", "inbound.max_message_bytes"),
        ('[inbound]\nsmtp_listen = "localhost"\n', "inbound.smtp_listen"),
        ('[inbound]\nlmtp_listen = "127.0.0.1:99999"\n', "inbound.lmtp_listen"),
        ('[mailgate]\ndefault_locale = "de"\n', "mailgate.default_locale"),
        ('[mailgate]\nhostname = "bad host"\n', "mailgate.hostname"),
        ('[addresses]\nsupport = "support+x@example.com"\n', "addresses.support"),
        ('[addresses.categories]\n"not-an-address" = "Billing"\n', "addresses.categories"),
        ('[outbound]\ntransport = "ftp://x"\n', "outbound.transport"),
        ('[outbound]\nretry_base_seconds = "soon"\n', "outbound.retry_base_seconds"),
        ('[portal]\nbase_url = "example.com"\n', "portal.base_url"),
        ("[tickets]\nauto_resolve_after_days = 0\n", "tickets"),
        # Settings that cannot work together (issue 9): nobody would ever say DMARC failed.
        (
            '[security]\nrequire_dmarc_for_threading = true\nverify_sender = "off"\n',
            "security.require_dmarc_for_threading",
        ),
        ('[security]\nverify_sender = "yes"\n', "security.verify_sender"),
        ('[security]\ndns_resolver = "8.8.8.8"\n', "security.dns_resolver"),
        ("[inbound]\nmax_recipients = 0\n", "inbound.max_recipients"),
        ("[inbound]\nmax_inflight_bytes = 2048\n", "inbound.max_inflight_bytes"),
        # Each SMTP front gets its share: 7 x 40 MiB is more than the 256 MiB default.
        ("[inbound]\nsmtp_processes = 7\n", "inbound.max_inflight_bytes"),
        ("[inbound]\nsmtp_processes = 33\n", "inbound.smtp_processes"),
        ("[outbound]\nfirst_contact_per_hour = 0\n", "outbound.first_contact_per_hour"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path: Path, toml: str, key: str):
    if toml.startswith("[mailgate]"):
        text = toml + 'secret_key = "s3cret-for-tests-that-is-32-bytes-long"\n'
    else:
        text = MINIMAL + toml
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert key in str(err.value)


def test_no_secret_means_the_secret_file_in_data_dir(tmp_path: Path):
    cfg = load(tmp_path, '[mailgate]\nhostname = "mg.test"\ndata_dir = "var"\n')
    assert cfg.secret_file == (tmp_path / "var" / "secret").resolve()


def test_a_secret_and_a_secret_file_together_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, MINIMAL + 'secret_key_file = "secret"\n')
    assert "mailgate.secret_key" in str(err.value)


def test_relative_paths_resolve_against_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = tmp_path / "etc" / "mailgate"
    write(folder, "")
    (folder / "secret").write_text("from-a-file-" + "x" * 32 + "\n")
    (folder / "secret").chmod(0o600)
    path = write(
        folder,
        """
[mailgate]
data_dir = "../var"
secret_key_file = "secret"

[database]
url = "sqlite:///../var/mailgate.db"

[outbound]
transport = "maildir:../var/sent"
""",
    )
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    cfg = config_mod.load(path, environ={})
    var = (tmp_path / "etc" / "var").resolve()
    assert cfg.data_dir == var
    assert cfg.database.url == f"sqlite:///{var / 'mailgate.db'}"
    assert cfg.outbound.transport == f"maildir:{var / 'sent'}"
    assert cfg.secret_file == folder / "secret"
    assert load_secret("", cfg.secret_file) == b"from-a-file-" + b"x" * 32


def test_absolute_paths_are_kept(tmp_path: Path):
    target = tmp_path / "abs"
    cfg = load(
        tmp_path / "conf",
        MINIMAL + f'data_dir = "{target}"\n[database]\nurl = "sqlite:///{target}/m.db"\n',
    )
    assert cfg.data_dir == target
    assert cfg.database.url == f"sqlite:///{target}/m.db"


def test_mailgate_database_url_overrides_the_file(tmp_path: Path):
    text = MINIMAL + '[database]\nurl = "sqlite:///file.db"\n'
    pg = "postgresql+psycopg://mailgate@db.example/mailgate"
    assert load(tmp_path, text, {"MAILGATE_DATABASE_URL": pg}).database.url == pg
    assert load(tmp_path, text).database.url == f"sqlite:///{(tmp_path / 'file.db').resolve()}"


def test_mailgate_config_picks_the_file_when_no_path_is_given(tmp_path: Path):
    path = write(tmp_path, MINIMAL + '[addresses]\nsupport = "help@example.org"\n')
    cfg = config_mod.load(None, environ={"MAILGATE_CONFIG": str(path)})
    assert cfg.support_address == "help@example.org"
    with pytest.raises(ConfigError) as err:
        config_mod.load(None, environ={"MAILGATE_CONFIG": str(tmp_path / "missing.toml")})
    assert "missing.toml" in str(err.value)


def _cli(config: Path, *args: str, env: dict[str, str] | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mailgate", "--config", str(config), *args],
        capture_output=True, env=full_env, timeout=60, cwd=ROOT,
    )


def test_the_cli_stops_with_one_line_naming_the_key(tmp_path: Path):
    path = write(tmp_path, MINIMAL + '[inbound]\nsmtp_lisen = "127.0.0.1:25"\n')
    proc = _cli(path, "check-config")
    assert proc.returncode != 0
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "inbound.smtp_lisen" in lines[0]


def test_the_cli_honours_mailgate_database_url(tmp_path: Path):
    path = write(tmp_path / "conf", MINIMAL + '[database]\nurl = "sqlite:///from-file.db"\n')
    override = tmp_path / "from-env.db"
    proc = _cli(path, "db", "upgrade", env={"MAILGATE_DATABASE_URL": f"sqlite:///{override}"})
    assert proc.returncode == 0, proc.stderr.decode()
    assert override.exists()
    assert not (tmp_path / "conf" / "from-file.db").exists()


def test_every_section_class_has_its_own_docstring():
    # Without one, dataclass() builds a docstring from inspect.signature when the module is
    # imported: a cost every `mailgate deliver` (one process a mail) would pay again.
    classes = [
        value
        for value in vars(config_mod).values()
        if isinstance(value, type) and value.__module__ == config_mod.__name__
        and config_mod.dataclasses.is_dataclass(value)
    ]  # fmt: skip
    assert len(classes) >= 18
    built = [c.__name__ for c in classes if (c.__doc__ or "").startswith(f"{c.__name__}(")]
    assert built == []
