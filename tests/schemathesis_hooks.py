"""Schemathesis hooks for Muhr's API conformance test (tests/api_conformance.rs).

OCSP and time-stamp requests are DER, media types schemathesis cannot make
from a JSON Schema: it sends arbitrary bytes instead (the responder must
answer each with an OCSP response, the TSA with a TimeStampResp, never an
error page or a 5xx).
"""
import schemathesis
from hypothesis import strategies as st

schemathesis.openapi.media_type("application/ocsp-request", st.binary(min_size=0, max_size=20480))
schemathesis.openapi.media_type("application/timestamp-query", st.binary(min_size=0, max_size=10240))
