"""`deploy/` describes the same application the code is: commands the CLI accepts, the app's body
limits at the proxy, every package in the image, tokens masked in the proxy's access log.

Docker and nginx are not installed where the tests run, so each file is checked against what it
must agree with: the Click CLI parses every command the files start, the nginx limits are read
against `encours/app.py`'s, the access-log mask is applied to real magic-link paths, and systemd's
own `systemd-analyze verify` reads the units when it is there.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
import yaml

from encours.app import BODY_LIMITS, FORM_BODY_LIMIT
from encours.cli import cli
from kernel.body_limit import MIB

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def _parses(command: list[str]) -> None:
    """The command line would start: `encours`, a chain of subcommands the CLI has, and options (with
    values of the right type) that the last one accepts. Nothing is run."""
    assert command[0].endswith("encours"), command
    chosen: click.Command = cli
    args = command[1:]
    context = click.Context(cli, info_name="encours")
    while isinstance(chosen, click.Group):
        name, sub, args = chosen.resolve_command(context, args)
        assert sub is not None and name is not None
        context = click.Context(sub, info_name=name, parent=context)
        chosen = sub
    chosen.make_context(context.info_name, list(args), parent=context.parent)


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_every_command_the_deploy_files_start_is_one_the_cli_accepts() -> None:
    commands = []
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    commands.append(yaml.safe_load(re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE).group(1)))  # type: ignore[union-attr]
    services = _compose()["services"]
    commands += [services[name]["command"] for name in ("app", "worker", "migrate")]
    for unit in UNITS:
        exec_start = re.search(r"^ExecStart=(.+)$", unit.read_text(encoding="utf-8"), re.MULTILINE)
        assert exec_start, unit
        commands.append(shlex.split(exec_start.group(1)))
    assert len(commands) == 4 + len(UNITS) and len(UNITS) == 2
    for command in commands:
        _parses(command)
    for wrong in (["encours", "serve", "--wokers", "2"], ["encours", "serve", "--port", "http"],
                  ["encours", "db", "upgrad"]):
        with pytest.raises(click.UsageError):  # the check itself refuses what the CLI refuses
            _parses(wrong)


def test_the_image_carries_every_package_and_installs_as_the_wheel_test_does() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    missing = [name for name in packages if (REPO / name).is_dir() and f"COPY {name}/ {name}/" not in dockerfile]
    assert not missing, f"deploy/Dockerfile does not copy {missing}"
    assert "--require-hashes -r /tmp/prod.txt" in dockerfile and "--no-deps /tmp/dist/encours-*.whl" in dockerfile
    assert re.search(r"^USER encours$", dockerfile, re.MULTILINE), "the app does not run as root"


def _nginx_limits(conf: str) -> tuple[int, dict[str, int]]:
    def mib(value: str) -> int:
        number, unit = int(value[:-1]), value[-1].lower()
        return number * {"k": 1024, "m": MIB}[unit]

    default = re.search(r"^    client_max_body_size (\d+[kKmM]);", conf, re.MULTILINE)
    assert default, "no server-wide client_max_body_size"
    locations = {prefix: mib(size) for prefix, size in
                 re.findall(r"location \^~ (\S+) \{\s*client_max_body_size (\d+[kKmM]);", conf)}
    return mib(default.group(1)), locations


def test_the_proxy_accepts_every_body_the_app_accepts() -> None:
    default, locations = _nginx_limits((DEPLOY / "nginx" / "encours.conf").read_text(encoding="utf-8"))
    assert default >= FORM_BODY_LIMIT
    for prefix, limit in BODY_LIMITS.items():
        assert prefix in locations, f"nginx has no location for {prefix}"
        assert locations[prefix] >= limit, f"nginx refuses bodies the app accepts under {prefix}"


def test_the_proxy_access_log_masks_magic_link_tokens() -> None:
    conf = (DEPLOY / "nginx" / "encours.conf").read_text(encoding="utf-8")
    rule = re.search(r"map \$request_uri \$encours_logged_uri \{\s*~(\S+)\s+(\S+);", conf)
    assert rule and "log_format encours" in conf and "$encours_logged_uri" in conf
    assert conf.count("access_log ") == conf.count("access_log /var/log/nginx/encours.access.log encours;")
    pattern = re.compile(rule.group(1).replace("(?<", "(?P<"))  # PCRE's named group, in Python's spelling
    replacement = rule.group(2).replace("$after", r"\g<after>")

    def logged(uri: str) -> str:
        return pattern.sub(replacement, uri) if pattern.match(uri) else uri

    token = "eyJjIjo0MiwidiI6MX0.Z3vQ1g.kQ2x_Sm9Fv8cXn0"
    assert logged(f"/p/{token}") == "/p/[token]"
    assert logged(f"/p/{token}?lang=en") == "/p/[token]?lang=en"
    assert logged("/portal/invoices/12") == "/portal/invoices/12"
    assert token not in logged(f"/p/{token}/")


@pytest.mark.parametrize("unit", UNITS, ids=lambda path: path.name)
def test_systemd_reads_the_units_without_a_warning(unit: Path, tmp_path: Path) -> None:
    # ExecStart must name an executable that exists here: the one this test session runs.
    encours = Path(sys.executable).with_name("encours")
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text(encoding="utf-8").replace("/opt/encours/bin/encours", str(encours)),
                    encoding="utf-8")
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_the_compose_file_runs_migrations_apart_and_shares_storage() -> None:
    services = _compose()["services"]
    assert set(services) >= {"db", "app", "worker", "migrate", "relay"}
    for name in ("app", "worker", "migrate"):
        assert services[name]["environment"]["ENCOURS_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "storage:/var/lib/encours/storage" in services[name]["volumes"]
    example = (DEPLOY / "encours.env.example").read_text(encoding="utf-8")
    assert "ENCOURS_SECRET_KEY=" in example and "ENCOURS_FORWARDED_ALLOW_IPS=" in example


def test_the_going_live_section_lists_every_stripe_event_the_code_applies() -> None:
    """A new event type handled in payments/stripe.py must be subscribed to by operators too."""
    source = (REPO / "payments" / "stripe.py").read_text(encoding="utf-8")
    handled = {name for case in re.findall(r'^\s+case ("[^:]+):$', source, re.MULTILINE)
               for name in re.findall(r'"([a-z_.]+)"', case)}
    assert {"payment_intent.succeeded", "charge.refunded"} <= handled
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("**Going live with Stripe and GoCardless.**"):]
    section = section[:section.index("\n\n**", 10)]
    missing = sorted(name for name in handled if f"`{name}`" not in section)
    assert not missing, f"README's going-live section does not list {missing}"
