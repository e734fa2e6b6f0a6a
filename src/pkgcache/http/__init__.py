"""The HTTP toolkit every route builds on: ways of answering, the request cycle around each handler, auth, the
access log, the fast path in front of the router, and the event loop. It knows no side and no assembly."""
