"""Reading from and writing to a PACS over DICOMweb (QIDO-RS search, WADO-RS retrieve, STOW-RS store), through
the maintained ``dicomweb-client``.

Addresses: a DICOMweb *source* is ``dicomweb+http://host:port/<root>/studies/<StudyUID>`` (optionally
``/series/<SeriesUID>`` and ``/instances/<SOPUID>``; ``dicomweb+https`` likewise); the part before
``/studies`` is the server's DICOMweb root. Credentials never go in a URL: one with ``user:password@`` is
refused. They come from :class:`PacsConfig` or the environment: ``VERIFICATION_DICOMWEB_USER`` and
``VERIFICATION_DICOMWEB_PASSWORD`` (HTTP basic) or ``VERIFICATION_DICOMWEB_TOKEN`` (bearer). No message,
log line or exception text carries them.

Every request has a timeout (connect, read); connection errors, timeouts, HTTP 429 and 5xx are retried a
bounded number of times with exponential backoff; what still fails is a typed :class:`~verification.errors.
PacsError` (unavailable, auth, not found). What is retrieved is bounded before it is downloaded: the number of
instances (from the QIDO listing) and the bytes (the ``Content-Length`` of each answer, summed), and each
instance's decoding cost is checked against a :class:`~verification.io.budget.Budget` from its header, as for
uploads. Listings carry only non-identifying attributes (no patient name, ID, birth date, accession number).
"""

from __future__ import annotations

import io
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from verification.errors import (
    ImageLoadError,
    InputTooLargeError,
    PacsAuthError,
    PacsError,
    PacsNotFoundError,
    PacsUnavailableError,
)
from verification.io.budget import Budget

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "ENV_PASSWORD",
    "ENV_TOKEN",
    "ENV_USER",
    "SCHEMES",
    "InstanceRef",
    "PacsClient",
    "PacsConfig",
    "PacsLimits",
    "PacsSource",
    "Retrieved",
    "SeriesInfo",
    "StudyInfo",
    "is_dicomweb",
    "parse_source",
]

log = logging.getLogger(__name__)

ENV_USER = "VERIFICATION_DICOMWEB_USER"
ENV_PASSWORD = "VERIFICATION_DICOMWEB_PASSWORD"
ENV_TOKEN = "VERIFICATION_DICOMWEB_TOKEN"
SCHEMES = ("dicomweb+http", "dicomweb+https")
_UID_CHARS = frozenset("0123456789.")
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
HEATMAP_PREFIX = "Heatmap "  # SeriesDescription of the series this tool stores (verification.pacs.writeback)
T = TypeVar("T")


def is_dicomweb(text: object) -> bool:
    """True for a string that is a DICOMweb source address (``dicomweb+http(s)://...``)."""
    return isinstance(text, str) and text.lower().startswith(tuple(s + "://" for s in SCHEMES))


def _uid(value: str, what: str) -> str:
    if not value or len(value) > 64 or not set(value) <= _UID_CHARS:
        raise PacsError(f"'{value[:70]}' is not a DICOM UID ({what}: digits and dots, at most 64 characters)")
    return value


@dataclass(frozen=True)
class PacsSource:
    """A parsed DICOMweb source: the server's root and the study (series, instance) asked for."""

    root: str  # http(s)://host:port/path of the DICOMweb service, no trailing slash
    study: str | None = None
    series: str | None = None
    instance: str | None = None

    def __str__(self) -> str:
        parts = [f"dicomweb+{self.root}"]
        for name, uid in (("studies", self.study), ("series", self.series), ("instances", self.instance)):
            if uid is None:
                break
            parts.append(f"{name}/{uid}")
        return "/".join(parts)


def parse_source(text: str) -> PacsSource:
    """Parse ``dicomweb+http(s)://host[:port]/root[/studies/<uid>[/series/<uid>[/instances/<uid>]]]``.

    Raises PacsError for another scheme, a URL with a user or password in it (credentials belong in the
    environment), a query or fragment, or a malformed UID. The message never repeats the credentials.
    """
    if not is_dicomweb(text):
        raise PacsError(
            f"not a DICOMweb address: expected {' or '.join(s + '://' for s in SCHEMES)}host:port/root/"
            "studies/<StudyInstanceUID>"
        )
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower().split("+", 1)[1]
    parsed = urllib.parse.urlsplit(f"{scheme}://{rest}")
    if parsed.username is not None or parsed.password is not None or "@" in parsed.netloc:
        raise PacsError(
            "the DICOMweb address contains a user name or password; remove it from the URL and set "
            f"{ENV_USER} and {ENV_PASSWORD} (or {ENV_TOKEN}) in the environment instead"
        )
    if parsed.query or parsed.fragment:
        raise PacsError("a DICOMweb source takes no query or fragment (?…, #…); give the study's path")
    if not parsed.hostname:
        raise PacsError("the DICOMweb address has no host; expected dicomweb+http://host:port/...")
    try:
        port = parsed.port
    except ValueError:
        raise PacsError("the DICOMweb address has an invalid port") from None
    netloc = parsed.hostname + (f":{port}" if port else "")
    if ":" in parsed.hostname:  # IPv6 literal
        netloc = f"[{parsed.hostname}]" + (f":{port}" if port else "")
    segments = [s for s in parsed.path.split("/") if s]
    uids: dict[str, str] = {}
    if "studies" in segments:
        at = segments.index("studies")
        root_path, tail = segments[:at], segments[at:]
        if (
            len(tail) % 2
            or [tail[i] for i in range(0, len(tail), 2)]
            != ["studies", "series", "instances"][: len(tail) // 2]
        ):
            raise PacsError(
                "expected …/studies/<uid>[/series/<uid>[/instances/<uid>]] after the DICOMweb root"
            )
        for i in range(0, len(tail), 2):
            uids[tail[i]] = _uid(tail[i + 1], tail[i])
    else:
        root_path = segments
    root = urllib.parse.urlunsplit((scheme, netloc, "/" + "/".join(root_path) if root_path else "", "", ""))
    return PacsSource(
        root=root.rstrip("/"),
        study=uids.get("studies"),
        series=uids.get("series"),
        instance=uids.get("instances"),
    )


@dataclass(frozen=True)
class PacsLimits:
    """What one retrieval may bring: instances (from the listing, before any is downloaded) and bytes (the
    answers' Content-Length, summed). The decoding cost of each instance is checked by the Budget."""

    max_instances: int = 1000
    max_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if self.max_instances < 1 or self.max_bytes < 1:
            raise ValueError("PACS limits must be positive")


@dataclass(frozen=True)
class PacsConfig:
    """How to reach a DICOMweb server. Credentials are kept out of ``repr`` and every message."""

    root: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    retries: int = 2  # extra attempts after the first, on connection errors, timeouts, 429 and 5xx
    backoff: float = 0.5  # seconds before the first retry, doubled each time

    def __post_init__(self) -> None:
        if self.password is not None and not self.user:
            raise PacsError(f"a DICOMweb password was given without a user name; set {ENV_USER}")
        if self.retries < 0 or self.connect_timeout <= 0 or self.read_timeout <= 0 or self.backoff < 0:
            raise ValueError("timeouts must be positive and retries/backoff not negative")

    @classmethod
    def from_env(
        cls, source: str | PacsSource, env: Mapping[str, str] | None = None, **options: Any
    ) -> PacsConfig:
        """The configuration for ``source`` (a DICOMweb address or its parsed form), credentials from
        ``env`` (default ``os.environ``): a token if set, else user and password."""
        env = os.environ if env is None else env
        parsed = source if isinstance(source, PacsSource) else parse_source(source)
        token = env.get(ENV_TOKEN) or None
        user = None if token else env.get(ENV_USER) or None
        password = None if token else env.get(ENV_PASSWORD) or None
        return cls(root=parsed.root, user=user, password=password, token=token, **options)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, self.token) if s)


# ------------------------------------------------------------------------------------------------ records

# Attributes a listing may show: acquisition and description facts, never the patient's identity.
_STUDY_FIELDS = {
    "StudyInstanceUID": "0020000D",
    "StudyDate": "00080020",
    "ModalitiesInStudy": "00080061",
    "StudyDescription": "00081030",
    "NumberOfStudyRelatedSeries": "00201206",
    "NumberOfStudyRelatedInstances": "00201208",
}
_SERIES_FIELDS = {
    "SeriesInstanceUID": "0020000E",
    "StudyInstanceUID": "0020000D",
    "Modality": "00080060",
    "BodyPartExamined": "00180015",
    "SeriesDescription": "0008103E",
    "SeriesNumber": "00200011",
    "NumberOfSeriesRelatedInstances": "00201209",
}
_INSTANCE_FIELDS = {
    "SOPInstanceUID": "00080018",
    "SeriesInstanceUID": "0020000E",
    "StudyInstanceUID": "0020000D",
    "InstanceNumber": "00200013",
    "Rows": "00280010",
    "Columns": "00280011",
}
_MAX_TEXT = 64


def _value(record: Mapping[str, Any], tag: str) -> Any:
    element = record.get(tag)
    if not isinstance(element, Mapping):
        return None
    values = element.get("Value")
    if not isinstance(values, list) or not values:
        return None
    return values if len(values) > 1 else values[0]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "\\".join(_text(v) for v in value)
    if isinstance(value, Mapping):  # a person name in JSON: never listed here, but be safe
        return ""
    return str(value)[:_MAX_TEXT]


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, list) else None
    except (TypeError, ValueError):
        return None


def _date(value: Any) -> str:
    text = _text(value)
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def _picker_line(*parts: str) -> str:
    return " · ".join(p for p in parts if p)


@dataclass(frozen=True)
class StudyInfo:
    """One study as listed: no patient name, ID, birth date or accession number (those are not read)."""

    study_uid: str
    date: str
    modalities: tuple[str, ...]
    description: str
    n_series: int | None
    n_instances: int | None

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> StudyInfo:
        mods = _value(record, _STUDY_FIELDS["ModalitiesInStudy"])
        return cls(
            study_uid=_text(_value(record, _STUDY_FIELDS["StudyInstanceUID"])),
            date=_date(_value(record, _STUDY_FIELDS["StudyDate"])),
            modalities=tuple(_text(m) for m in (mods if isinstance(mods, list) else [mods] if mods else [])),
            description=_text(_value(record, _STUDY_FIELDS["StudyDescription"])),
            n_series=_int(_value(record, _STUDY_FIELDS["NumberOfStudyRelatedSeries"])),
            n_instances=_int(_value(record, _STUDY_FIELDS["NumberOfStudyRelatedInstances"])),
        )

    def label(self) -> str:
        """One line for a picker: date · modalities · description · counts."""
        counts = []
        if self.n_series is not None:
            counts.append(f"{self.n_series} series")
        if self.n_instances is not None:
            counts.append(f"{self.n_instances} image(s)")
        return _picker_line(
            self.date or "no date", "/".join(self.modalities) or "?", self.description, ", ".join(counts)
        )


@dataclass(frozen=True)
class SeriesInfo:
    series_uid: str
    study_uid: str
    modality: str
    body_part: str
    description: str
    number: int | None
    n_instances: int | None

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> SeriesInfo:
        f = _SERIES_FIELDS
        return cls(
            series_uid=_text(_value(record, f["SeriesInstanceUID"])),
            study_uid=_text(_value(record, f["StudyInstanceUID"])),
            modality=_text(_value(record, f["Modality"])),
            body_part=_text(_value(record, f["BodyPartExamined"])),
            description=_text(_value(record, f["SeriesDescription"])),
            number=_int(_value(record, f["SeriesNumber"])),
            n_instances=_int(_value(record, f["NumberOfSeriesRelatedInstances"])),
        )

    @property
    def is_heatmap(self) -> bool:
        """A series of heatmaps stored by this tool (Secondary Capture, modality OT, its description)."""
        return self.modality == "OT" and self.description.startswith(HEATMAP_PREFIX)

    def label(self) -> str:
        """One line for a picker: number · modality · body part · description · count."""
        return _picker_line(
            f"#{self.number}" if self.number is not None else "",
            self.modality,
            self.body_part,
            self.description,
            f"{self.n_instances} image(s)" if self.n_instances is not None else "",
        )


@dataclass(frozen=True)
class InstanceRef:
    study_uid: str
    series_uid: str
    sop_uid: str
    number: int | None = None


@dataclass(frozen=True)
class Retrieved:
    """One retrieved instance: its Part-10 bytes (for the image loaders) and where it came from."""

    ref: InstanceRef
    data: bytes = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.ref.sop_uid}.dcm"


# ------------------------------------------------------------------------------------------------ client


class _ByteMeter:
    """A requests response hook, run before the body is read: refuse an answer whose Content-Length would
    exceed what is left of the retrieval's bytes, or that comes compressed although ``identity`` was asked
    for (its Content-Length would not bound what it inflates to). ``measured`` is False for an answer
    without a length (chunked): its size is charged once read (:meth:`charge`)."""

    def __init__(self) -> None:
        self.remaining: int | None = None
        self.measured = True

    def _refuse(self, size: int) -> InputTooLargeError:
        return InputTooLargeError(
            f"the PACS answer is {size:,} bytes, more than the {self.remaining:,} bytes left of this "
            "retrieval's limit; retrieve one series at a time or raise PacsLimits.max_bytes"
        )

    def __call__(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        if self.remaining is None or response.request.method != "GET" or response.status_code >= 300:
            return response
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            response.close()
            raise PacsError(
                f"the PACS sent a {encoding[:20]}-compressed answer although an uncompressed one was asked "
                "for; its size cannot be bounded before it is inflated, so it was not read"
            )
        length = response.headers.get("Content-Length")
        self.measured = length is not None and length.isdigit()
        if self.measured:
            if int(length) > self.remaining:
                response.close()
                raise self._refuse(int(length))
            self.remaining -= int(length)
        return response

    def charge(self, size: int) -> None:
        """Charge an answer that had no Content-Length, now that it is read."""
        if self.remaining is not None and not self.measured:
            if size > self.remaining:
                raise self._refuse(size)
            self.remaining -= size


class PacsClient:
    """Search, retrieve and store on one DICOMweb server (``dicomweb_client.DICOMwebClient`` underneath).

    One retrieval at a time per client (its byte count is the client's); make one client per thread."""

    def __init__(self, config: PacsConfig) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        self.config = config
        session = requests.Session()
        session.trust_env = False  # no proxy or .netrc credentials from the environment
        session.headers["Accept-Encoding"] = "identity"  # Content-Length then bounds what is read
        session.mount("http://", requests.adapters.HTTPAdapter(max_retries=0))
        session.mount("https://", requests.adapters.HTTPAdapter(max_retries=0))
        if config.token:
            session.headers["Authorization"] = f"Bearer {config.token}"
        elif config.user:
            session.auth = (config.user, config.password or "")
        self._meter = _ByteMeter()
        session.hooks["response"].append(self._meter)
        self._session = session
        self._client = DICOMwebClient(
            url=config.root, session=session, timeout=(config.connect_timeout, config.read_timeout)
        )
        self._client.set_http_retry_params(retry=False)  # retries are ours (connection errors too)

    # ---- plumbing

    @property
    def where(self) -> str:
        return self.config.root

    def _scrub(self, text: str) -> str:
        for secret in self.config.secrets:
            text = text.replace(secret, "***")
        return text

    def _call(self, what: str, fn: Callable[[], T], *, missing: str | None = None) -> T:
        """Run one request with bounded retries; map every failure to a typed PacsError."""
        import requests

        attempts = self.config.retries + 1
        for attempt in range(attempts):
            try:
                return fn()
            except (InputTooLargeError, ImageLoadError, PacsError):
                raise
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status in _RETRY_STATUS and attempt + 1 < attempts:
                    self._wait(attempt, what, f"HTTP {status}")
                    continue
                raise self._http_error(what, status, missing) from None
            except (requests.Timeout, requests.ConnectionError) as exc:
                timeout = isinstance(exc, requests.Timeout)  # a connect timeout is both: a timeout
                if attempt + 1 < attempts:
                    self._wait(attempt, what, "timeout" if timeout else "connection error")
                    continue
                if timeout:
                    raise PacsUnavailableError(
                        f"the PACS at {self.where} did not answer {what} within "
                        f"{self.config.read_timeout:g} s ({attempts} attempt(s)); it is overloaded or down"
                    ) from None
                raise PacsUnavailableError(
                    f"cannot reach the PACS at {self.where} for {what} ({attempts} attempt(s)): the "
                    "connection was refused or dropped. Check the address and that the server is running."
                ) from None
            except requests.JSONDecodeError:
                raise PacsError(
                    f"the PACS at {self.where} answered {what} with something that is not valid DICOMweb "
                    "(not JSON); is the address the server's DICOMweb root?"
                ) from None
            except requests.RequestException as exc:
                raise PacsError(f"{what} on the PACS at {self.where} failed ({type(exc).__name__})") from None
            except Exception as exc:  # a malformed answer: not JSON, bad multipart, not DICOM (any parser)
                raise PacsError(
                    f"the PACS at {self.where} answered {what} with something that is not valid DICOMweb "
                    f"({type(exc).__name__}: {self._scrub(str(exc))[:160]})"
                ) from None
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, what: str, why: str) -> None:
        delay = self.config.backoff * (2**attempt)
        log.info("PACS %s: %s; retrying in %.1f s", what, why, delay)
        time.sleep(delay)

    def _http_error(self, what: str, status: int, missing: str | None) -> PacsError:
        if status in (401, 403):
            configured = bool(self.config.user or self.config.token)
            hint = (
                "the configured credentials were refused; check them"
                if configured
                else f"none are configured: set {ENV_USER} and {ENV_PASSWORD}, or {ENV_TOKEN}"
            )
            return PacsAuthError(f"the PACS at {self.where} refused {what} (HTTP {status}): {hint}")
        if status == 404:
            return PacsNotFoundError(
                f"{missing or 'what was asked for'} is not on the PACS at {self.where} (HTTP 404)"
            )
        if status >= 500 or status == 429:
            return PacsUnavailableError(
                f"the PACS at {self.where} kept failing {what} (HTTP {status}, "
                f"{self.config.retries + 1} attempt(s)); try again later"
            )
        return PacsError(f"the PACS at {self.where} answered {what} with HTTP {status}")

    # ---- QIDO-RS

    def search_studies(
        self,
        *,
        modality: str | None = None,
        body_part: str | None = None,
        date: str | None = None,
        accession: str | None = None,
        description: str | None = None,
        limit: int = 100,
    ) -> list[StudyInfo]:
        """Studies matching patient-independent filters: ``modality`` (CR, DX, …), ``body_part`` (CHEST),
        ``date`` (YYYYMMDD or a range YYYYMMDD-YYYYMMDD), ``accession`` (matched, never listed),
        ``description`` (wildcards ``*``). At most ``limit``."""
        filters: dict[str, str] = {}
        if modality:
            filters["ModalitiesInStudy"] = modality
        if date:
            filters["StudyDate"] = date.replace("-", "") if len(date) == 10 else date
        if accession:
            filters["AccessionNumber"] = accession
        if description:
            filters["StudyDescription"] = description
        fields = list(_STUDY_FIELDS)
        studies = self._call(
            "a study search",
            lambda: self._client.search_for_studies(
                fuzzymatching=False, limit=limit, fields=fields, search_filters=filters
            ),
        )
        found = [StudyInfo.from_json(r) for r in studies if isinstance(r, Mapping)]
        if body_part:  # a series attribute: keep the studies that have such a series
            wanted = {s.study_uid for s in self.search_series(body_part=body_part, limit=10 * limit)}
            found = [s for s in found if s.study_uid in wanted]
        return [s for s in found if s.study_uid][:limit]

    def search_series(
        self,
        study_uid: str | None = None,
        *,
        modality: str | None = None,
        body_part: str | None = None,
        limit: int = 1000,
    ) -> list[SeriesInfo]:
        """Series of one study (or of all studies), optionally filtered by modality and body part."""
        filters: dict[str, str] = {}
        if modality:
            filters["Modality"] = modality
        if body_part:
            filters["BodyPartExamined"] = body_part
        study = _uid(study_uid, "study") if study_uid else None
        records = self._call(
            "a series search",
            lambda: self._client.search_for_series(
                study_instance_uid=study, limit=limit, fields=list(_SERIES_FIELDS), search_filters=filters
            ),
            missing=f"study {study}",
        )
        out = [SeriesInfo.from_json(r) for r in records if isinstance(r, Mapping)]
        if study:
            out = [dataclass_replace(s, study_uid=s.study_uid or study) for s in out]
        return [s for s in out if s.series_uid]

    def list_instances(self, source: PacsSource, *, limits: PacsLimits | None = None) -> list[InstanceRef]:
        """The instances a source names (its study, series or one instance), in series and instance order.
        Raises PacsNotFoundError when there are none and InputTooLargeError above ``max_instances``."""
        limits = limits or PacsLimits()
        if source.study is None:
            raise PacsError(
                "the DICOMweb source names no study; give …/studies/<StudyInstanceUID> (search for one with "
                "`python -m verification.pacs search`)"
            )
        what = f"study {source.study}" + (f", series {source.series}" if source.series else "")
        if source.instance is not None:
            what += f", instance {source.instance}"
        records = self._call(
            "an instance search",
            lambda: self._client.search_for_instances(
                study_instance_uid=source.study,
                series_instance_uid=source.series,
                fields=list(_INSTANCE_FIELDS),
                limit=limits.max_instances + 1,
                search_filters={"SOPInstanceUID": source.instance} if source.instance else {},
            ),
            missing=what,
        )
        refs = []
        for r in records:
            if not isinstance(r, Mapping):
                continue
            sop = _text(_value(r, _INSTANCE_FIELDS["SOPInstanceUID"]))
            series = _text(_value(r, _INSTANCE_FIELDS["SeriesInstanceUID"])) or (source.series or "")
            if sop and series:
                number = _int(_value(r, _INSTANCE_FIELDS["InstanceNumber"]))
                refs.append(InstanceRef(source.study, series, sop, number))
        if source.instance is not None:
            refs = [r for r in refs if r.sop_uid == source.instance]
        if source.series is None and refs:
            # A whole study: leave out the heatmap series this tool stored there (a map of a map is not an
            # input); name such a series in the source to retrieve it.
            derived = {s.series_uid for s in self.search_series(source.study) if s.is_heatmap}
            refs = [r for r in refs if r.series_uid not in derived]
        if not refs:
            raise PacsNotFoundError(f"{what} is not on the PACS at {self.where} (no instances found)")
        if len(refs) > limits.max_instances:
            raise InputTooLargeError(
                f"{what} holds more than {limits.max_instances:,} instances, the limit for one retrieval; "
                "give one series, or raise PacsLimits.max_instances"
            )
        refs.sort(key=lambda r: (r.series_uid, r.number if r.number is not None else 0, r.sop_uid))
        return refs

    # ---- WADO-RS

    def iter_retrieve(
        self,
        source: PacsSource | Sequence[InstanceRef],
        *,
        limits: PacsLimits | None = None,
        budget: Budget | None = None,
        retain: bool = True,
    ) -> Iterator[Retrieved]:
        """Retrieve the instances of a source (or a list of references) as Part-10 bytes, one at a time.

        Before anything is downloaded the instance count is checked; each answer's size is checked from its
        Content-Length against what is left of ``limits.max_bytes``; with ``retain`` (the images will all stay
        in memory, as an upload's do) each instance's decoding cost is read from its header and charged to
        ``budget``. Without it, :func:`verification.io.images.load_image` checks each image's cost from its
        header when it is decoded, as for files. Decode the bytes with ``load_image``. The instances of one
        series come in one request.
        """
        limits = limits or PacsLimits()
        budget = budget if budget is not None else Budget()
        refs = self.list_instances(source, limits=limits) if isinstance(source, PacsSource) else list(source)
        if len(refs) > limits.max_instances:
            raise InputTooLargeError(
                f"{len(refs):,} instances asked for; at most {limits.max_instances:,} in one retrieval"
            )
        groups: dict[tuple[str, str], list[InstanceRef]] = {}
        for ref in refs:
            groups.setdefault((ref.study_uid, ref.series_uid), []).append(ref)
        self._meter.remaining = limits.max_bytes
        try:
            for (study, series), group in groups.items():
                got = self._fetch(study, series, group)
                for ref in group:
                    yield self._encode(ref, got, budget, retain)
        finally:
            self._meter.remaining = None

    def _fetch(self, study: str, series: str, group: Sequence[InstanceRef]) -> dict[str, Any]:
        """The datasets of ``group`` (all in one series) by SOP UID: one WADO-RS request for the series when
        several of its instances are wanted (its Content-Length checked as one answer), else the instance."""
        if len(group) == 1:
            ref = group[0]
            what = f"instance {ref.sop_uid}"
            ds = self._call(
                f"the retrieval of {what}",
                lambda: self._client.retrieve_instance(study, series, ref.sop_uid),
                missing=what,
            )
            return {ref.sop_uid: ds}
        what = f"series {series}"
        datasets = self._call(
            f"the retrieval of {what}",
            lambda: self._client.retrieve_series(study, series),
            missing=what,
        )
        wanted = {ref.sop_uid for ref in group}
        return {str(ds.SOPInstanceUID): ds for ds in datasets if str(ds.get("SOPInstanceUID", "")) in wanted}

    def _encode(self, ref: InstanceRef, got: Mapping[str, Any], budget: Budget, retain: bool) -> Retrieved:
        """One retrieved dataset as Part-10 bytes, its size and decoding cost checked."""
        from pydicom import dcmwrite

        from verification.io.images import image_cost

        what = f"instance {ref.sop_uid}"
        ds = got.get(ref.sop_uid)
        if ds is None:
            raise PacsNotFoundError(
                f"{what}, listed by the PACS at {self.where}, was missing from its answer; try again"
            )
        buf = io.BytesIO()
        try:
            dcmwrite(buf, ds, enforce_file_format=False)
        except Exception as exc:  # a dataset pydicom cannot write back: the file's problem
            raise ImageLoadError(
                f"{what} from the PACS cannot be re-encoded ({type(exc).__name__}); it is malformed"
            ) from None
        data = buf.getvalue()
        self._meter.charge(len(data))
        item = Retrieved(ref, data)
        if retain:  # kept in memory together: charged as an upload's images are
            budget.charge_image(image_cost(data, item.name), item.name)
        return item

    def retrieve(self, source: PacsSource | Sequence[InstanceRef], **kwargs: Any) -> list[Retrieved]:
        """:meth:`iter_retrieve` into a list: all or nothing (an error leaves nothing half-retrieved)."""
        return list(self.iter_retrieve(source, **kwargs))

    def retrieve_dataset(self, ref: InstanceRef) -> Dataset:
        """One instance as a pydicom Dataset (for its patient/study modules when writing results back)."""
        return self._call(
            f"the retrieval of instance {ref.sop_uid}",
            lambda: self._client.retrieve_instance(ref.study_uid, ref.series_uid, ref.sop_uid),
            missing=f"instance {ref.sop_uid}",
        )

    # ---- STOW-RS

    def store(self, datasets: Sequence[Dataset], study_uid: str) -> list[str]:
        """Store ``datasets`` (all of one study) in ONE STOW-RS request; returns the stored SOP UIDs.

        Raises PacsError when the server refuses any of them (its FailedSOPSequence is reported)."""
        if not datasets:
            raise PacsError("nothing to store")
        if any(str(ds.StudyInstanceUID) != study_uid for ds in datasets):
            raise PacsError("every object stored in one request must belong to the one study")
        answer = self._call(
            f"storing {len(datasets)} object(s) in study {study_uid}",
            lambda: self._client.store_instances(list(datasets), study_instance_uid=study_uid),
            missing=f"study {study_uid}",
        )
        failed = getattr(answer, "FailedSOPSequence", None) or []
        if failed:
            reasons = sorted({str(getattr(item, "FailureReason", "?")) for item in failed})
            raise PacsError(
                f"the PACS at {self.where} refused {len(failed)} of {len(datasets)} object(s) "
                f"(failure reason {', '.join(reasons)[:80]}); see the server's log"
            )
        stored = [str(item.ReferencedSOPInstanceUID) for item in getattr(answer, "ReferencedSOPSequence", [])]
        return stored or [str(ds.SOPInstanceUID) for ds in datasets]

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PacsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dataclass_replace(obj: T, **changes: Any) -> T:
    import dataclasses

    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
