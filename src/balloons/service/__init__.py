"""The job service: the same jobs over HTTP for any language (``balloons serve``).

Producers use the HTTP API with scoped keys; machines of the HTTP worker protocol talk to
their attempt URL with a token scoped to that one attempt and hold no Redis or Fly
credentials. Every error is an RFC 9457 problem (:mod:`balloons.service.problems`).
Needs the ``[service]`` extra (Starlette and uvicorn).
"""
