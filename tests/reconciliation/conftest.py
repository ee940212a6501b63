from pathlib import Path

import pytest

FILES = Path(__file__).parent / "files"


@pytest.fixture
def read():
    def _read(name: str) -> bytes:
        return (FILES / name).read_bytes()

    return _read
