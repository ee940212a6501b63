from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ENCOURS = str(Path(sys.executable).with_name("encours"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCOURS_")}
    env.update({"ENCOURS_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}"}, **extra)
    return env


def test_serve_answers_healthz_on_the_given_port(tmp_path: Path) -> None:
    env = _env(tmp_path, ENCOURS_SECRET_KEY="s" * 32)
    subprocess.run([ENCOURS, "db", "upgrade"], env=env, check=True, capture_output=True)
    port = _free_port()
    server = subprocess.Popen([ENCOURS, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert response.status_code == 200 and response.json() == {"status": "ok"}
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_serve_without_secret_key_says_so_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run([ENCOURS, "serve"], env=_env(tmp_path), capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ENCOURS_SECRET_KEY" in lines[0] and lines[0].startswith("encours: error:")


def test_stripe_keys_without_webhook_secret_refuse_to_start_in_one_line(tmp_path: Path) -> None:
    env = _env(tmp_path, ENCOURS_SECRET_KEY="s" * 32, STRIPE_SECRET_KEY="sk_test_1", STRIPE_PUBLISHABLE_KEY="pk_test_1")
    result = subprocess.run([ENCOURS, "serve"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "STRIPE_WEBHOOK_SECRET" in lines[0]


def test_the_access_log_never_shows_a_magic_link_token(tmp_path: Path) -> None:
    env = _env(tmp_path, ENCOURS_SECRET_KEY="s" * 32)
    subprocess.run([ENCOURS, "db", "upgrade"], env=env, check=True, capture_output=True)
    port = _free_port()
    server = subprocess.Popen([ENCOURS, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    token = "eyJjIjoxLCJ2IjoxfQ.aSecretStamp.aSecretSignature"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/p/{token}?utm=1", timeout=5).status_code == 400
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
    logged = out.decode() + err.decode()
    assert "GET /p/[token]?utm=1" in logged and "/healthz" in logged
    assert "aSecret" not in logged


# `encours serve`'s factory in a fresh interpreter, started by uvicorn's lifespan as each worker runs it.
FACTORY_HEAP = """
import asyncio, gc
import uvicorn
from uvicorn.lifespan.on import LifespanOn
from encours.app import create_app_from_env

async def main() -> None:
    before = len(gc.get_objects())
    config = uvicorn.Config(create_app_from_env())
    config.load()
    lifespan = LifespanOn(config)
    await lifespan.startup()
    print(gc.get_freeze_count(), len(gc.get_objects()), before)
    await lifespan.shutdown()

asyncio.run(main())
"""


def test_the_serve_factory_freezes_the_start_up_heap(tmp_path: Path) -> None:
    env = _env(tmp_path, ENCOURS_SECRET_KEY="s" * 32)
    done = subprocess.run([sys.executable, "-c", FACTORY_HEAP], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    frozen, tracked, before = (int(n) for n in done.stdout.split())
    # the modules, routes and settings loaded at start-up are frozen: a full collection skips them
    assert frozen > before and tracked < frozen // 10
