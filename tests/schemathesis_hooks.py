"""Schemathesis hooks for Muhr's API conformance test (tests/api_conformance.rs).

OCSP requests are DER, a media type schemathesis cannot make from a JSON
Schema: it sends arbitrary bytes instead (the responder must answer each
with an OCSP response, never an error page or a 5xx).
"""
import schemathesis
from hypothesis import strategies as st

schemathesis.openapi.media_type("application/ocsp-request", st.binary(min_size=0, max_size=20480))
