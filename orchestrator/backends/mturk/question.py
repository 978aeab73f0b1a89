"""The Question XML of one MTurk HIT: our task page as an HTMLQuestion, or the portal as an ExternalQuestion.

The task page shows the image through a presigned GET, which must stay valid while a worker can
still accept the HIT, work on it, and while the requester reviews it; SigV4 caps that at 7 days.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from xml.sax.saxutils import escape

from orchestrator.errors import BackendError

if TYPE_CHECKING:
    import boto3

    from orchestrator.spec import JobSpec
    from orchestrator.templates import TaskText

MAX_QUESTION_BYTES = 65_535
# SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_SECONDS = 7 * 86_400
_SCHEMAS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas"
HTML_QUESTION_NS = f"{_SCHEMAS}/2011-11-11/HTMLQuestion.xsd"
EXTERNAL_QUESTION_NS = f"{_SCHEMAS}/2006-07-14/ExternalQuestion.xsd"


def html_question(html: str) -> str:
    """An HTMLQuestion holding `html`; FrameHeight 0 lets the page fill the worker's window."""
    # A CDATA section cannot contain "]]>": end it there and open a new one.
    cdata = html.replace("]]>", "]]]]><![CDATA[>")
    return (
        f'<HTMLQuestion xmlns="{HTML_QUESTION_NS}">\n'
        f"<HTMLContent><![CDATA[{cdata}]]></HTMLContent>\n"
        "<FrameHeight>0</FrameHeight>\n"
        "</HTMLQuestion>"
    )


def external_question(url: str) -> str:
    return (
        f'<ExternalQuestion xmlns="{EXTERNAL_QUESTION_NS}">\n'
        f"<ExternalURL>{escape(url)}</ExternalURL>\n"
        "<FrameHeight>0</FrameHeight>\n"
        "</ExternalQuestion>"
    )


def external_url(base: str, job: str, object_id: str) -> str:
    """The portal's marketplace URL for one object: `base` with `job` and `object` query parameters.

    MTurk appends `assignmentId`, `hitId`, `turkSubmitTo` and `workerId` itself.
    """
    parts = urlsplit(base)
    query = parse_qsl(parts.query, keep_blank_values=True) + [("job", job), ("object", object_id)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def check_size(question: str, object_id: str) -> None:
    """BackendError when the question is over MTurk's 65,535-byte limit."""
    size = len(question.encode("utf-8"))
    if size > MAX_QUESTION_BYTES:
        raise BackendError(
            f"the MTurk question for object {object_id} is {size:,} bytes; MTurk accepts at most "
            f"{MAX_QUESTION_BYTES:,}",
            hint='shorten [task] instructions, or set [mturk] question = "external" to serve the task '
            "from the labeljob portal",
        )


@dataclass(frozen=True)
class ImageUrlLifetime:
    """How long image URLs are signed for, and a warning when that is shorter than needed."""

    seconds: int
    needed: int
    warning: str | None


def image_url_lifetime(spec: JobSpec) -> ImageUrlLifetime:
    """Long enough for the HIT's lifetime, one assignment and the review window, capped at 7 days."""
    mturk = spec.mturk
    review = mturk.auto_approve_after if mturk else 0
    needed = spec.task.lifetime + spec.task.time_limit + review
    if needed <= MAX_PRESIGN_SECONDS:
        return ImageUrlLifetime(needed, needed, None)
    return ImageUrlLifetime(
        MAX_PRESIGN_SECONDS,
        needed,
        f"images must stay readable for {needed / 86_400:.1f} days (task lifetime + time limit + "
        "auto_approve_after) but presigned URLs last at most 7 days: workers or reviewers late in the "
        "job may see broken images; shorten task.lifetime or mturk.auto_approve_after",
    )


class ImageLinks:
    """URLs a worker's browser can open: presigned GETs of s3:// images.

    Presigning is a local signature, not a call; one S3 client serves every image of a job. The
    URLs are SigV4, signed for the session's region, which must be the image bucket's region
    (`labeljob doctor` checks it).
    """

    def __init__(self, boto3_session: boto3.Session | None, expires_in: int) -> None:
        self.boto3_session = boto3_session
        self.expires_in = expires_in
        self._s3 = None

    def url(self, source_ref: str) -> str:
        from orchestrator.aws import client
        from orchestrator.storage import is_s3_uri, split_s3_uri

        bucket, key = split_s3_uri(source_ref)
        if not is_s3_uri(source_ref) or not bucket or not key:
            raise BackendError(
                f"{source_ref}: MTurk workers can only open images at s3://BUCKET/KEY",
                hint="upload the images to S3 and build the manifest from the bucket",
            )
        if self._s3 is None:
            # Virtual-hosted style reaches the bucket's own region; SigV2 URLs are deprecated.
            signing = {"signature_version": "s3v4", "s3": {"addressing_style": "virtual"}}
            self._s3 = client("s3", self.boto3_session, config_kwargs=signing)
        return self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.expires_in
        )


class Questions:
    """The Question XML of each HIT of one job; BackendError for one MTurk would refuse."""

    def __init__(self, spec: JobSpec, boto3_session: boto3.Session | None) -> None:
        from orchestrator.spec import MTurkSpec
        from orchestrator.templates import TaskText

        self.spec = spec
        self.settings = spec.mturk or MTurkSpec()
        self.lifetime = image_url_lifetime(spec)
        self.links = ImageLinks(boto3_session, self.lifetime.seconds)
        self._text: TaskText | None = None
        if self.settings.question == "html":
            self._text = TaskText.from_spec(spec)

    def question(self, object_id: str, source_ref: str) -> str:
        from orchestrator.templates import render_task

        if self._text is None:
            xml = external_question(external_url(self.settings.external_url or "", self.spec.name, object_id))
        else:
            image = self.links.url(source_ref)
            try:
                html = render_task(self._text, "mturk", image_url=image)
            except ValueError as exc:
                raise BackendError(
                    f"{source_ref}: cannot build the task page: {exc}",
                    hint="MTurk shows HITs over https; an S3 endpoint override (AWS_ENDPOINT_URL_S3) must "
                    "give https URLs",
                ) from None
            xml = html_question(html)
        check_size(xml, object_id)
        return xml
