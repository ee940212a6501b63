"""Both storage backends keep the same promises: put, get, stream, exists, delete, by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.settings import SettingsError, load_settings
from kernel.storage import LocalStorage, ObjectMissing, ObjectStorage, S3Storage, StorageUnavailable, check_key
from tests.conftest import TEST_SECRET
from tests.fakes.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3Server, s3_server


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStorage:
    if request.param == "local":
        return LocalStorage(tmp_path / "files")
    server: S3Server = request.getfixturevalue("s3_server")
    return S3Storage(server.create_bucket(), prefix="uploads", endpoint_url=server.endpoint_url, region=REGION,
                     access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY)


def test_an_object_is_kept_read_whole_or_in_chunks_and_deleted(backend: ObjectStorage) -> None:
    content = bytes(range(256)) * 1024  # 256 KB: several chunks
    assert not backend.exists("ab/abcdef")
    backend.put("ab/abcdef", content)
    assert backend.exists("ab/abcdef")
    assert backend.get("ab/abcdef") == content
    chunks = list(backend.stream("ab/abcdef"))
    assert len(chunks) > 1 and b"".join(chunks) == content
    backend.put("ab/abcdef", b"replaced")
    assert backend.get("ab/abcdef") == b"replaced"
    backend.delete("ab/abcdef")
    assert not backend.exists("ab/abcdef")
    backend.delete("ab/abcdef")  # deleting what is gone is no error


def test_a_missing_object_is_told_before_any_byte_is_streamed(backend: ObjectStorage) -> None:
    with pytest.raises(ObjectMissing):
        backend.get("no/such")
    with pytest.raises(ObjectMissing):
        backend.stream("no/such")


@pytest.mark.parametrize("key", ["", "../etc/passwd", "/abs", "a/../b", "a//b", "a/./b", "with space"])
def test_keys_that_could_leave_the_store_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)


def test_the_s3_prefix_is_where_objects_land(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    storage = S3Storage(bucket, prefix="/tenant-a/", endpoint_url=s3_server.endpoint_url, region=REGION,
                        access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY)
    storage.put("ab/abc", b"x")
    listed = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["tenant-a/ab/abc"]


def test_a_missing_bucket_is_a_clear_error_not_a_missing_file(s3_server: S3Server) -> None:
    storage = S3Storage("no-such-bucket", endpoint_url=s3_server.endpoint_url, region=REGION,
                        access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY)
    with pytest.raises(StorageUnavailable, match="no-such-bucket"):
        storage.put("ab/abc", b"x")
    with pytest.raises(StorageUnavailable, match="no-such-bucket"):
        storage.check()


BASE = {"ENCOURS_SECRET_KEY": TEST_SECRET}


@pytest.mark.parametrize(("environ", "message"), [
    ({"ENCOURS_STORAGE": "ftp"}, "ENCOURS_STORAGE must be one of local, s3"),
    ({"ENCOURS_STORAGE": "s3"}, "ENCOURS_STORAGE=s3 needs ENCOURS_S3_BUCKET"),
    ({"ENCOURS_STORAGE": "s3", "ENCOURS_S3_BUCKET": "b", "ENCOURS_S3_ENDPOINT_URL": "minio:9000"},
     "ENCOURS_S3_ENDPOINT_URL must start with http"),
    ({"ENCOURS_STORAGE": "s3", "ENCOURS_S3_BUCKET": "b", "ENCOURS_S3_ACCESS_KEY_ID": "AKIA"},
     "set both or neither"),
])
def test_storage_settings_are_checked_at_start_up(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(BASE | environ)


def test_s3_settings_are_read_with_secrets_hidden() -> None:
    settings = load_settings(BASE | {"ENCOURS_STORAGE": "S3", "ENCOURS_S3_BUCKET": "files", "ENCOURS_S3_REGION": "fr-par",
                                     "ENCOURS_S3_ACCESS_KEY_ID": "key", "ENCOURS_S3_SECRET_ACCESS_KEY": "very secret"})
    assert (settings.storage_backend, settings.s3_bucket, settings.s3_region) == ("s3", "files", "fr-par")
    assert "very secret" not in repr(settings)
    assert load_settings(BASE).storage_backend == "local"
