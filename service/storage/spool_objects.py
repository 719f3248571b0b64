"""Storage layer: the shared spool's audio in S3-compatible object storage (SPOOL_URL=s3://bucket/prefix), one
object `<prefix>/<segment id>.wav` per segment; the `AudioStore` of `DatabaseSpool` (`storage/spool_segments.py`),
which keeps the rows and the claims in the database. The only module that imports aiobotocore (botocore's
asyncio client), so AWS S3, MinIO, Cloudflare R2 and Heroku's bucket add-ons all go through one adapter.

Every failure is `S3Unavailable`, with what was wrong in words (`describe`): `put` then fails, the entry stays
on the local disk and is tried again on the next pass. It is logged once when it starts (`spool.s3_failed`,
with the error's code, never its text: an S3 error can echo the access key and what was signed) and once when
S3 answers again (`spool.s3_recovered`). Deleting an object after its row is best effort: what cannot be
deleted now is an orphan, which `DatabaseSpool.purge` deletes later.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from service.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = structlog.get_logger("callscribe.spool")

_SUFFIX = ".wav"
_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidClientTokenId",
                "AuthorizationHeaderMalformed"}  # fmt: skip
# A few quick tries, then the entry waits on the disk for the next pass (SPOOL_RETRY_S), not minutes here.
_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"})


class S3Unavailable(Exception):
    """S3 did not do what was asked; `why` says what was wrong, with no secret in it."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def split_spool_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` as ("bucket", "some/prefix/"); the prefix is "" without one."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


_ANSWERS = {
    "AccessDenied": "S3 denied access (AccessDenied): the key may not read and write this bucket and prefix",
    "NoSuchBucket": "no such bucket (NoSuchBucket): check SPOOL_URL (and SPOOL_S3_ENDPOINT_URL, AWS_REGION)",
}


def _answered(exc: ClientError) -> str:
    code = str(exc.response.get("Error", {}).get("Code", "?"))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
    if code in _CREDENTIALS:
        return f"S3 refused the credentials ({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    return _ANSWERS.get(code, f"S3 answered {code} (HTTP {status})")


def describe(exc: BaseException) -> str:
    """What went wrong with S3, in words a user can act on, naming settings, never their values."""
    if isinstance(exc, ClientError):
        return _answered(exc)
    if isinstance(exc, NoCredentialsError):
        return "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        return f"cannot reach S3 ({type(exc).__name__}): check SPOOL_S3_ENDPOINT_URL and the network"
    return f"S3 request failed ({type(exc).__name__})"


class S3Audio:
    """Segments' WAVs as objects in one bucket, under one prefix."""

    outside = True

    def __init__(self, settings: Settings) -> None:
        if settings.spool_url is None:
            raise ValueError("S3Audio needs SPOOL_URL")
        self.bucket, self.prefix = split_spool_url(settings.spool_url)
        self._session = get_session()
        key, secret = settings.aws_access_key_id, settings.aws_secret_access_key
        self._client_options: dict[str, Any] = {
            "region_name": settings.aws_region or "us-east-1",
            "endpoint_url": settings.spool_s3_endpoint_url,
            "aws_access_key_id": key.get_secret_value() if key else None,
            "aws_secret_access_key": secret.get_secret_value() if secret else None,
            "config": _CONFIG,
        }
        self._failing: str | None = None  # why S3 failed last, until it answers again: logged once

    def key(self, segment_id: str) -> str:
        """The object that holds `segment_id`'s WAV."""
        return f"{self.prefix}{segment_id}{_SUFFIX}"

    async def stage(self, segment_id: str, wav: bytes) -> None:
        async with self._client("write") as client:
            await client.put_object(Bucket=self.bucket, Key=self.key(segment_id), Body=wav, ContentType="audio/wav")

    async def write(self, connection: AsyncConnection, segment_id: str, wav: bytes) -> None:
        return None  # the object is there already (`stage`)

    async def read(self, connection: AsyncConnection, segment_id: str) -> bytes:
        async with self._client("read") as client:
            answer = await client.get_object(Bucket=self.bucket, Key=self.key(segment_id))
            async with answer["Body"] as body:
                return await body.read()

    async def forget(self, connection: AsyncConnection, segment_id: str) -> None:
        return None  # the object goes after its row (`discard`): never a row without its audio

    async def discard(self, segment_ids: Sequence[str]) -> None:
        if not segment_ids:
            return
        with contextlib.suppress(S3Unavailable):  # logged; what is left is an orphan, for `purge` to delete
            async with self._client("delete") as client:
                for segment_id in segment_ids:
                    await client.delete_object(Bucket=self.bucket, Key=self.key(segment_id))

    async def listed(self) -> list[tuple[str, datetime.datetime]]:
        held: list[tuple[str, datetime.datetime]] = []
        async with self._client("list") as client:
            async for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    name = item["Key"].removeprefix(self.prefix)
                    if name.endswith(_SUFFIX) and "/" not in name:
                        held.append((name.removesuffix(_SUFFIX), item["LastModified"]))
        return held

    @contextlib.asynccontextmanager
    async def _client(self, doing: str) -> AsyncIterator[S3Client]:
        """A client for one operation; its failure as S3Unavailable, logged when it is news."""
        try:
            async with self._session.create_client("s3", **self._client_options) as client:
                yield client
        except (BotoCoreError, ClientError) as exc:
            why = describe(exc)
            if why != self._failing:
                self._failing = why
                log.warning("spool.s3_failed", bucket=self.bucket, doing=doing, error=type(exc).__name__, why=why)
            raise S3Unavailable(why) from exc
        if self._failing is not None:
            self._failing = None
            log.info("spool.s3_recovered", bucket=self.bucket)
